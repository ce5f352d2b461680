"""A stand-in for NVIDIA's CUDA apt repository, for gpufleet's fleet lab only.

developer.download.nvidia.com cannot be reached from gpufleet's development and CI
machines. This package builds a repository of the same shape, which the
nvidia_driver role configures exactly as it configures NVIDIA's:

  - a flat repository (`deb [signed-by=KEY] URL /`) at
    `.../compute/cuda/repos/debian12/x86_64/`, with `Packages`, `Packages.gz`,
    a signed `InRelease` and `Release.gpg`;
  - the signing key beside it as `<short key id>.pub`, ASCII-armoured, as NVIDIA
    publishes `3bf863cc.pub`;
  - NVIDIA's compute-only package names: `nvidia-driver-cuda` plus
    `nvidia-kernel-dkms`.

What is inside differs: the packages are Debian's own non-free driver packages
(and their contrib and non-free dependencies), fetched from Debian's mirror by
apt itself. One is slimmed: `nvidia-kernel-dkms` keeps Debian's control file,
maintainer scripts and dkms.conf, so DKMS adds, builds and installs it for each
kernel as it does the real one, but its sources are five small modules of the
same names that build in seconds. NVIDIA's real source takes DKMS minutes a
host; the lab builds it once, on the host that takes the driver from Debian's
non-free. `nvidia-driver-cuda` is a metapackage made here that depends on
Debian's nvidia-smi, libcuda1 and nvidia-persistenced, the compute user space
NVIDIA's package carries. The key is the lab's own, made once per machine.
Production never uses any of this.
"""

REPO_PATH = "cuda/repos/debian12/x86_64"
LABEL = "NVIDIA CUDA (gpufleet lab stand-in)"
