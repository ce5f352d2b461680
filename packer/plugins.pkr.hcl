# The plugins modern Packer (1.10 or newer) installs with `packer init`. Kept in a file of its
# own: Packer before 1.7 (Debian's 1.6.6) rejects this block, has both built in, and builds
# the other files of this directory without it.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
  }
}
