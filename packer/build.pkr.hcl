locals {
  repo = var.repo_root == "" ? "${path.root}/.." : var.repo_root
  # The image's choices, handed to the bake's roles as Ansible's extra variables.
  bake_vars = {
    nvidia_driver_source        = var.nvidia_driver_source
    nvidia_driver_branch        = var.nvidia_driver_branch
    nvidia_driver_module_flavor = var.nvidia_driver_module_flavor
    ollama_version              = var.ollama_version
    ollama_release_sha256       = var.ollama_release_sha256
    model_store_models          = var.models
    sysprep_build_users         = var.build_users
    fleet_lb_cidrs              = var.lb_cidrs
    fleet_ops_cidrs             = var.ops_cidrs
    fleet_monitoring_cidrs      = var.monitoring_cidrs
  }
  extra_vars_files = flatten([for file in var.ansible_extra_vars_files : ["--extra-vars", "@${file}"]])
  build_user_flags = join(" ", formatlist("--build-user %s", var.build_users))
}

build {
  name    = "gpu"
  sources = ["source.amazon-ebs.gpu", "source.null.ssh_host"]

  # The bake: playbooks/bake.yml, sysprep last. Ansible connects to the instance itself
  # rather than through Packer's SSH proxy, whose scp cannot serve OpenSSH 9's SFTP-based
  # scp (packer-plugin-ansible#100); its connection stays open after sysprep removes keys.
  # Its temporary files go to memory (/dev/shm), so that the image keeps none.
  provisioner "ansible" {
    playbook_file = "${local.repo}/playbooks/bake.yml"
    user          = build.User
    use_proxy     = false
    ansible_env_vars = [
      "ANSIBLE_CONFIG=${local.repo}/ansible.cfg",
      "ANSIBLE_REMOTE_TMP=/dev/shm/gpufleet-ansible",
    ]
    extra_arguments = concat(
      ["--extra-vars", jsonencode(local.bake_vars)],
      local.extra_vars_files,
      var.ansible_extra_arguments,
    )
  }

  # The image audit, in Packer's still-open session: no new login is possible after sysprep.
  # /dev/shm is memory, not part of the image, so neither the audit nor Packer's own script
  # leave a file behind.
  provisioner "file" {
    source      = "${path.root}/image_audit.py"
    destination = "/dev/shm/gpufleet_image_audit.py"
  }

  provisioner "shell" {
    remote_folder = "/dev/shm"
    inline = [
      "sudo -n /usr/bin/python3 /dev/shm/gpufleet_image_audit.py --root / ${local.build_user_flags}",
      "rm -f /dev/shm/gpufleet_image_audit.py",
    ]
  }

  post-processor "manifest" {
    output      = var.manifest_path
    strip_path  = true
    custom_data = local.image_tags
  }
}
