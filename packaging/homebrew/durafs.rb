# Homebrew formula for durafs (a tap formula: homebrew-core does not take
# formulae that need macFUSE).
#
#   brew tap durafs/durafs <this repository>
#   brew install --HEAD durafs
#
# Status: the macOS frontend (macFUSE) is not written yet, so this formula
# does not produce a working mount on macOS today; it is kept in step with
# the Debian package (binary, man pages, completions, policies) so the
# macOS port only has to make `cargo build` succeed there.
class Durafs < Formula
  desc "FUSE passthrough filesystem that enforces a durability policy"
  homepage "https://github.com/durafs/durafs"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/durafs/durafs.git", branch: "main"

  depends_on "rust" => :build

  on_macos do
    # macFUSE is a cask and needs a kernel extension or FSKit approval.
    depends_on cask: "macfuse"
  end

  def install
    system "cargo", "install", *std_cargo_args
    system bin/"durafs", "generate-assets", buildpath/"assets"
    man5.install buildpath/"assets/man/durafs-policy.5"
    man8.install Dir[buildpath/"assets/man/*.8"]
    bash_completion.install buildpath/"assets/completions/durafs.bash" => "durafs"
    zsh_completion.install buildpath/"assets/completions/_durafs"
    fish_completion.install buildpath/"assets/completions/durafs.fish"
    pkgshare.install "policies"
  end

  test do
    (testpath/"p.toml").write "version = 1\n[defaults]\nsync = \"always\"\n"
    assert_match "always", shell_output("#{bin}/durafs check #{testpath}/p.toml")
    assert_match "durafs #{version}", shell_output("#{bin}/durafs --version")
  end
end
