# Inputs of the GPU image bake. Validations use only functions Packer 1.6.6 has as well
# (no regex), so one set of files serves modern Packer and Debian's.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "AWS region the image is built in."
  validation {
    condition     = length(split("-", var.region)) >= 3
    error_message = "The region must be an AWS region name, such as us-east-1."
  }
}

variable "base_os" {
  type        = string
  default     = "debian-12"
  description = "Base image: the newest official debian-12 or ubuntu-24.04 AMI for amd64."
  validation {
    condition     = contains(["debian-12", "ubuntu-24.04"], var.base_os)
    error_message = "The base_os must be debian-12 or ubuntu-24.04."
  }
}

variable "instance_type" {
  type        = string
  default     = "g4dn.xlarge"
  description = "Build instance type. A cheaper type without a GPU works (c6i.xlarge): the driver's modules are built with DKMS for the image's kernels, not loaded."
  validation {
    condition     = length(split(".", var.instance_type)) == 2
    error_message = "The instance_type must be an EC2 instance type, such as g4dn.xlarge."
  }
}

variable "spot" {
  type        = bool
  default     = false
  description = "Build on a spot instance of instance_type, at the current spot price."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance; empty for the default VPC's."
}

variable "builder_cidrs" {
  type        = list(string)
  default     = []
  description = "CIDRs the temporary security group lets reach SSH; empty means only the public IP Packer runs from."
  validation {
    condition     = length([for cidr in var.builder_cidrs : cidr if length(split("/", cidr)) != 2]) == 0
    error_message = "Each of builder_cidrs must be a CIDR, such as 203.0.113.7/32."
  }
}

variable "root_volume_size_gb" {
  type        = number
  default     = 100
  description = "Size of the image's gp3 root volume, in GiB: the system, the driver and the baked models' seed."
  validation {
    condition     = var.root_volume_size_gb >= 20
    error_message = "The root_volume_size_gb must be at least 20."
  }
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key that encrypts the image's volumes; empty for the account's AWS-managed EBS key."
}

variable "ami_name_prefix" {
  type        = string
  default     = "gpufleet-gpu"
  description = "Start of the image's name; the base OS and a timestamp follow."
  validation {
    condition     = length(var.ami_name_prefix) >= 3 && length(var.ami_name_prefix) <= 64
    error_message = "The ami_name_prefix must be 3 to 64 characters."
  }
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "Other regions the image is copied to, encrypted with each region's default EBS key."
}

variable "ami_users" {
  type        = list(string)
  default     = []
  description = "AWS account ids the image is shared with."
  validation {
    condition     = length([for account in var.ami_users : account if length(account) != 12]) == 0
    error_message = "Each of ami_users must be a 12-digit AWS account id."
  }
}

variable "image_role" {
  type        = string
  default     = "gpu"
  description = "The gpufleet:role tag of the image; the inventory's ami_outdated group compares images of one role."
}

variable "lb_cidrs" {
  type        = list(string)
  description = "Networks (CIDR) of the LB hosts (HAProxy), which alone reach Ollama and the fleet agent's check: the VPC's subnets. Required: an instance launched from the image lets in only these until gpu_hosts.yml refines them from the inventory."
  validation {
    condition     = length(var.lb_cidrs) > 0 && length([for cidr in var.lb_cidrs : cidr if length(split("/", cidr)) != 2]) == 0
    error_message = "The lb_cidrs must list at least one CIDR, such as 10.0.1.0/24."
  }
}

variable "ops_cidrs" {
  type        = list(string)
  description = "Networks (CIDR) of the ops hosts, which alone reach SSH and the fleet agent's state: the VPC's subnets. Required: an instance launched from the image lets in only these until gpu_hosts.yml refines them from the inventory."
  validation {
    condition     = length(var.ops_cidrs) > 0 && length([for cidr in var.ops_cidrs : cidr if length(split("/", cidr)) != 2]) == 0
    error_message = "The ops_cidrs must list at least one CIDR, such as 10.0.1.0/24."
  }
}

variable "monitoring_cidrs" {
  type        = list(string)
  description = "Networks (CIDR) of the monitoring hosts (Prometheus), which alone reach node exporter: the VPC's subnets. Required: an instance launched from the image lets in only these until gpu_hosts.yml refines them from the inventory."
  validation {
    condition     = length(var.monitoring_cidrs) > 0 && length([for cidr in var.monitoring_cidrs : cidr if length(split("/", cidr)) != 2]) == 0
    error_message = "The monitoring_cidrs must list at least one CIDR, such as 10.0.1.0/24."
  }
}

variable "nvidia_driver_source" {
  type        = string
  default     = "distribution"
  description = "Where the NVIDIA driver comes from: distribution (Debian non-free, Ubuntu) or cuda (NVIDIA's CUDA repository)."
  validation {
    condition     = contains(["distribution", "cuda"], var.nvidia_driver_source)
    error_message = "The nvidia_driver_source must be distribution or cuda."
  }
}

variable "nvidia_driver_branch" {
  type        = string
  default     = "535"
  description = "NVIDIA driver branch; Debian 12's own packages carry 535 only."
  validation {
    condition     = can(parseint(var.nvidia_driver_branch, 10))
    error_message = "The nvidia_driver_branch must be a branch number, such as 535 or 580."
  }
}

variable "nvidia_driver_module_flavor" {
  type        = string
  default     = "proprietary"
  description = "Kernel modules for the GPUs the image is for: open (L4, L40S, H100 and newer) or proprietary (T4, A10G). A bake has no GPU inventory to choose by."
  validation {
    condition     = contains(["open", "proprietary"], var.nvidia_driver_module_flavor)
    error_message = "The nvidia_driver_module_flavor must be open or proprietary."
  }
}

variable "ollama_version" {
  type        = string
  default     = "0.14.2"
  description = "Ollama release baked into the image, X.Y.Z."
  validation {
    condition     = length(split(".", var.ollama_version)) == 3
    error_message = "The ollama_version must be X.Y.Z, such as 0.14.2."
  }
}

variable "ollama_release_sha256" {
  type        = string
  description = "sha256 of that Ollama release's archive, as its release page gives it."
  validation {
    condition     = length(var.ollama_release_sha256) == 64
    error_message = "The ollama_release_sha256 must be the 64 hexadecimal digits of a sha256."
  }
}

variable "models" {
  type        = list(string)
  default     = ["llama3.1:8b"]
  description = "Models baked into the image's seed, copied onto instance-store NVMe at boot."
  validation {
    condition     = length([for model in var.models : model if length(model) == 0 || length(split(" ", model)) > 1]) == 0
    error_message = "Each of models must be an Ollama model name, such as llama3.1:8b."
  }
}

variable "ansible_extra_vars_files" {
  type        = list(string)
  default     = []
  description = "Files of more role variables for the bake (release URLs and checksums, node exporter's archive), as Ansible's --extra-vars @file."
}

variable "ansible_extra_arguments" {
  type        = list(string)
  default     = []
  description = "More arguments for ansible-playbook, such as --ssh-common-args for the ssh source."
}

variable "build_users" {
  type        = list(string)
  default     = []
  description = "Users only the build needed; sysprep removes them and the image audit fails if they remain."
}

variable "git_sha" {
  type        = string
  default     = ""
  description = "The commit the image is built from, for its gpufleet:git-sha tag."
}

variable "manifest_path" {
  type        = string
  default     = "packer-manifest.json"
  description = "Where the manifest post-processor writes the built images' ids, per region."
}

variable "ssh_host" {
  type        = string
  default     = ""
  description = "The ssh source's host: an existing host provisioned exactly as the build instance is (CI, the lab)."
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "The ssh source's user, with passwordless sudo."
}

variable "ssh_private_key_file" {
  type        = string
  default     = ""
  description = "The ssh source's private key."
}

variable "repo_root" {
  type        = string
  default     = ""
  description = "The gpufleet checkout (playbooks/, roles/, ansible.cfg); empty means the directory above this template's. gpufleet bake sets it when it stages the template elsewhere."
}
