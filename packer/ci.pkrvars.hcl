# The image's choices for the bake workflow (.github/workflows/bake.yml), committed so that a
# bake on a version tag runs as shipped. Nothing here is secret. The workflow's inputs
# override the build instance and the ranges; it reads ollama_release_sha256 from the
# release's own checksum file unless a run pins it.
base_os                     = "debian-12"
instance_type               = "g4dn.xlarge"
nvidia_driver_module_flavor = "proprietary"
ollama_version              = "0.14.2"
models                      = ["llama3.1:8b"]
ansible_extra_vars_files    = ["packer/ci-bake-vars.yml"]
# Who an instance launched from the image lets in, until gpu_hosts.yml refines it from the
# inventory: the VPC's subnets of the LB, ops and monitoring hosts. These are the default
# VPC's range (172.31.0.0/16, where the bake launches without a subnet_id): set your own.
lb_cidrs         = ["172.31.0.0/16"]
ops_cidrs        = ["172.31.0.0/16"]
monitoring_cidrs = ["172.31.0.0/16"]
