locals {
  base = {
    "debian-12" = {
      owner       = "136693071363"
      name        = "debian-12-amd64-*"
      user        = "admin"
      root_device = "/dev/xvda"
    }
    "ubuntu-24.04" = {
      owner       = "099720109477"
      name        = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      user        = "ubuntu"
      root_device = "/dev/sda1"
    }
  }
  baked_at = timestamp()
  ami_name = "${var.ami_name_prefix}-${var.base_os}-${formatdate("YYYYMMDDhhmmss", local.baked_at)}"
  # The image's and its snapshots' tags; the manifest carries them too.
  image_tags = {
    "Name"                   = local.ami_name
    "gpufleet:role"          = var.image_role
    "gpufleet:base-os"       = var.base_os
    "gpufleet:driver-branch" = var.nvidia_driver_branch
    "gpufleet:driver-flavor" = var.nvidia_driver_module_flavor
    "gpufleet:ollama"        = var.ollama_version
    "gpufleet:models"        = join(" ", var.models)
    "gpufleet:git-sha"       = var.git_sha
    "gpufleet:baked-at"      = local.baked_at
  }
  kms_key_id = var.kms_key_id == "" ? null : var.kms_key_id
}

source "amazon-ebs" "gpu" {
  region = var.region
  source_ami_filter {
    filters = {
      name                = local.base[var.base_os].name
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = [local.base[var.base_os].owner]
    most_recent = true
  }
  instance_type       = var.spot ? null : var.instance_type
  spot_instance_types = var.spot ? [var.instance_type] : null
  spot_price          = var.spot ? "auto" : null
  subnet_id           = var.subnet_id == "" ? null : var.subnet_id
  ssh_username        = local.base[var.base_os].user
  ssh_interface       = "public_ip"

  # SSH only from the builder: its own public IP, or the CIDRs given.
  temporary_security_group_source_public_ip = length(var.builder_cidrs) == 0
  temporary_security_group_source_cidrs     = length(var.builder_cidrs) == 0 ? null : var.builder_cidrs

  # IMDSv2 only, on the build instance and on every instance of the image.
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = local.base[var.base_os].root_device
    volume_size           = var.root_volume_size_gb
    volume_type           = "gp3"
    encrypted             = true
    kms_key_id            = local.kms_key_id
    delete_on_termination = true
  }
  encrypt_boot = true
  kms_key_id   = local.kms_key_id

  ami_name        = local.ami_name
  ami_description = "gpufleet GPU host: NVIDIA ${var.nvidia_driver_branch} (${var.nvidia_driver_module_flavor}), Ollama ${var.ollama_version}, models ${join(" ", var.models)}"
  ami_regions     = var.ami_regions
  ami_users       = var.ami_users
  tags            = local.image_tags
  snapshot_tags   = local.image_tags
  run_tags = {
    "Name"          = "gpufleet-bake ${local.ami_name}"
    "gpufleet:role" = "bake"
  }
  run_volume_tags = {
    "Name"          = "gpufleet-bake ${local.ami_name}"
    "gpufleet:role" = "bake"
  }
}

# An existing host provisioned exactly as the build instance is: CI and the lab run the same
# provisioners against a lab host with it.
source "null" "ssh_host" {
  communicator         = "ssh"
  ssh_host             = var.ssh_host
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
}
