# Only exoscale_key and exoscale_secret are required: every other variable has a safe default,
# and every secret is generated (secrets.tf) unless you pass your own.

variable "exoscale_key" {
  description = "Your Exoscale API key (EXO...), used by Terraform, and by `poolpilot template push` when create_iam_keys is false."
  type        = string
  sensitive   = true
}

variable "exoscale_secret" {
  description = "The secret of your Exoscale API key."
  type        = string
  sensitive   = true
}

variable "zone" {
  description = "The Exoscale zone for everything, with one zone (ignored when `zones` is set)."
  type        = string
  default     = "ch-gva-2"

  validation {
    condition     = contains(["ch-gva-2", "ch-dk-2", "de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1", "hr-zag-1"], var.zone)
    error_message = "zone must be one of ch-gva-2, ch-dk-2, de-fra-1, de-muc-1, at-vie-1, at-vie-2, bg-sof-1, hr-zag-1."
  }
}

variable "zones" {
  description = <<-EOT
    The zones, e.g. ["ch-gva-2", "de-fra-1"]: an instance pool and its NLB in each; the monitor
    (one discovery agent and one autoscaler over every pool) and the front in the first.
    Default (null): [zone], the single-zone deployment.
  EOT
  type        = list(string)
  default     = null

  validation {
    condition = var.zones == null ? true : try(
      length(var.zones) >= 1 && length(distinct(var.zones)) == length(var.zones) && alltrue([
        for z in var.zones : contains(["ch-gva-2", "ch-dk-2", "de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1", "hr-zag-1"], z)
    ]), false)
    error_message = "zones must be 1 to 8 distinct zones among ch-gva-2, ch-dk-2, de-fra-1, de-muc-1, at-vie-1, at-vie-2, bg-sof-1, hr-zag-1."
  }
}

variable "front" {
  description = <<-EOT
    Run the front (`poolpilot front` on an Elastic IP, the static address, port 80 only) over
    every zone's NLB. Then the pools admit the app port only from the front, the monitor and
    the NLB health checks. Default (null): on with more than one zone, off with one (the NLB
    is then the entry point, open to the world, as the course expects).
  EOT
  type        = bool
  default     = null
}

variable "profile" {
  description = <<-EOT
    What this deploys.
    "course": the slow app's pool (and NLB) in every zone, the monitor, the front with several zones.
    "redis":  the key-value appliance, in one zone: a Redis primary (a fixed instance), a pool of
              Redis replicas and a pool of `poolpilot kv` API members, an NLB on port 80 for the
              API, a second NLB on 6379 for the replicas (admitted from the API members only),
              and the monitor scaling both pools. pool_size, pool_min, pool_max and
              pool_instance_type apply to each of the two pools.
  EOT
  type        = string
  default     = "course"
  nullable    = false

  validation {
    condition     = contains(["course", "redis"], var.profile)
    error_message = "profile must be \"course\" or \"redis\"."
  }
}

variable "name_prefix" {
  description = "Prefix of every name this creates (security groups, IAM role and keys, templates, the pool): change it to deploy twice in one organisation."
  type        = string
  default     = "poolpilot"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "name_prefix must be 1 to 20 characters: a lowercase letter, then lowercase letters, digits or dashes."
  }
}

# --- Images -------------------------------------------------------------------------------------

variable "image_source" {
  description = <<-EOT
    Where the appliance images come from (pool, monitor, and front with the front); Terraform
    registers them as private templates in every zone that needs them (templates.tf) and
    deletes them on destroy.
    "nix":   Terraform runs `nix build` in this repository (needs Nix on this machine).
    "files": qcow2 files built before (image_files).
    "urls":  images published at URLs, with their MD5 checksums (image_urls); needs no Nix.
  EOT
  type        = string
  default     = "nix"

  validation {
    condition     = contains(["nix", "files", "urls"], var.image_source)
    error_message = "image_source must be \"nix\", \"files\" or \"urls\"."
  }
}

variable "image_files" {
  description = "With image_source = \"files\": the qcow2 files, e.g. { pool = \"pool-node.qcow2\", monitor = \"monitor.qcow2\", front = \"front.qcow2\" } (front only with the front). With profile = \"redis\": { monitor = \"kv-monitor.qcow2\", primary = \"redis-primary.qcow2\", replica = \"redis-replica.qcow2\", kv = \"kv-node.qcow2\" }."
  type = object({
    pool    = optional(string)
    monitor = string
    front   = optional(string)
    primary = optional(string)
    replica = optional(string)
    kv      = optional(string)
  })
  default = null
}

variable "image_urls" {
  description = "With image_source = \"urls\": where Exoscale downloads each image, and its MD5 (hex): pool and monitor (and front) for the course profile; monitor, primary, replica and kv for profile = \"redis\"."
  type = object({
    pool    = optional(object({ url = string, md5 = string }))
    monitor = object({ url = string, md5 = string })
    front   = optional(object({ url = string, md5 = string }))
    primary = optional(object({ url = string, md5 = string }))
    replica = optional(object({ url = string, md5 = string }))
    kv      = optional(object({ url = string, md5 = string }))
  })
  default = null

  validation {
    condition = var.image_urls == null ? true : alltrue([
      for i in [var.image_urls.pool, var.image_urls.monitor, var.image_urls.front, var.image_urls.primary, var.image_urls.replica, var.image_urls.kv] :
      i == null ? true : can(regex("^https?://", i.url)) && can(regex("^[0-9a-f]{32}$", i.md5))
    ])
    error_message = "image_urls: each url must be http(s) and each md5 32 lowercase hex digits."
  }
}

variable "poolpilot_command" {
  description = "How Terraform runs poolpilot on this machine to push and delete templates. Default: `nix run <this repository>#poolpilot --` with image_source \"nix\", else `poolpilot` (on PATH)."
  type        = string
  default     = null
}

variable "template_bucket" {
  description = "The object storage bucket the images are uploaded to (created if missing). Default: <name_prefix>-templates-<random suffix>, since bucket names are global."
  type        = string
  default     = null

  validation {
    condition     = var.template_bucket == null ? true : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.template_bucket))
    error_message = "template_bucket must be a valid bucket name: 3 to 63 lowercase letters, digits, dots or dashes."
  }
}

# --- Machines -----------------------------------------------------------------------------------

variable "monitor_instance_type" {
  description = "Instance type of the monitor, family.size (Prometheus and Grafana want about 2 GiB: standard.small)."
  type        = string
  default     = "standard.small"

  validation {
    condition     = can(regex("^(standard|cpu|memory|storage|colossus|gpu[a-z0-9]*)\\.(micro|tiny|small|medium|large|extra-large|huge|mega|titan|titan48c|jumbo|colossus)$", lower(var.monitor_instance_type)))
    error_message = "monitor_instance_type must be an Exoscale instance type, family.size, e.g. standard.small."
  }
}

variable "front_instance_type" {
  description = "Instance type of the front, family.size (a proxy: little memory, some CPU)."
  type        = string
  default     = "standard.tiny"

  validation {
    condition     = can(regex("^(standard|cpu|memory|storage|colossus|gpu[a-z0-9]*)\\.(micro|tiny|small|medium|large|extra-large|huge|mega|titan|titan48c|jumbo|colossus)$", lower(var.front_instance_type)))
    error_message = "front_instance_type must be an Exoscale instance type, family.size, e.g. standard.tiny."
  }
}

variable "redis_instance_type" {
  description = "With profile = \"redis\": instance type of the Redis primary, family.size (it holds the whole data set in memory)."
  type        = string
  default     = "standard.small"

  validation {
    condition     = can(regex("^(standard|cpu|memory|storage|colossus|gpu[a-z0-9]*)\\.(micro|tiny|small|medium|large|extra-large|huge|mega|titan|titan48c|jumbo|colossus)$", lower(var.redis_instance_type)))
    error_message = "redis_instance_type must be an Exoscale instance type, family.size, e.g. standard.small."
  }
}

variable "pool_instance_type" {
  description = "Instance type of the pool members, family.size."
  type        = string
  default     = "standard.micro"

  validation {
    condition     = can(regex("^(standard|cpu|memory|storage|colossus|gpu[a-z0-9]*)\\.(micro|tiny|small|medium|large|extra-large|huge|mega|titan|titan48c|jumbo|colossus)$", lower(var.pool_instance_type)))
    error_message = "pool_instance_type must be an Exoscale instance type, family.size, e.g. standard.micro."
  }
}

variable "disk_size" {
  description = "Disk size of every instance, GiB (the templates need 10)."
  type        = number
  default     = 10

  validation {
    condition     = var.disk_size >= 10 && var.disk_size <= 51200 && floor(var.disk_size) == var.disk_size
    error_message = "disk_size must be a whole number of GiB from 10 (the templates' size) to 51200."
  }
}

variable "pool_size" {
  description = "Initial size of each zone's pool, within [pool_min, pool_max]; the autoscaler changes it afterwards (Terraform ignores that drift)."
  type        = number
  default     = 1

  validation {
    condition     = var.pool_size >= 1 && floor(var.pool_size) == var.pool_size
    error_message = "pool_size must be a whole number, at least 1."
  }
}

variable "pool_min" {
  description = "The smallest size the autoscaler sets, for each zone's pool (at least 1)."
  type        = number
  default     = 1

  validation {
    condition     = var.pool_min >= 1 && floor(var.pool_min) == var.pool_min
    error_message = "pool_min must be a whole number, at least 1."
  }
}

variable "pool_max" {
  description = "The largest size the autoscaler sets, for each zone's pool: it bounds the bill (at least pool_min, at most 20)."
  type        = number
  default     = 4

  validation {
    condition     = var.pool_max >= 1 && var.pool_max <= 20 && floor(var.pool_max) == var.pool_max
    error_message = "pool_max must be a whole number between 1 and 20."
  }
}

# --- Access -------------------------------------------------------------------------------------

variable "admin_cidrs" {
  description = <<-EOT
    Who may reach Grafana (3000), Prometheus (9090) and SSH (22). Both web endpoints ask for a
    password (outputs grafana_admin_password, prometheus_password), so the default, everyone,
    is not a leak; narrow it to your address (IPv4, the instances have no IPv6), e.g.
    ["203.0.113.7/32"]. [] closes them.
  EOT
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrnetmask(c)) && can(cidrsubnet(c, 0, 0)) && try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "admin_cidrs must be IPv4 CIDRs in canonical form (the network address, e.g. 203.0.113.0/24 or 203.0.113.7/32)."
  }
}

variable "prometheus_auth" {
  description = <<-EOT
    Prometheus asks for a password (user `prometheus`, output prometheus_password). The course's
    automated checker queries Prometheus without credentials: for a graded run only, set false
    and narrow admin_cidrs to the checker's address.
  EOT
  type        = bool
  default     = true
}

variable "ssh_public_key" {
  description = "An SSH public key for root logins on every machine (optional; Terraform registers it). Or name a key already in the account with ssh_key_name."
  type        = string
  default     = null

  validation {
    condition     = var.ssh_public_key == null ? true : can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key line (ssh-ed25519 AAAA..., ssh-rsa AAAA..., ecdsa-sha2-...)."
  }
}

variable "ssh_key_name" {
  description = "Name of an SSH key already registered in your Exoscale account (optional; ignored when ssh_public_key is set)."
  type        = string
  default     = null
}

variable "create_iam_keys" {
  description = <<-EOT
    Create narrow API keys (iam.tf): one for the autoscaler (read the pool, scale, evict) and one
    for the template push (templates and the image bucket only). Needs a key allowed to manage
    IAM. With false, a key without IAM rights deploys: the monitor and the template push then
    use your key, which the state and the monitor's user-data then hold.
  EOT
  type        = bool
  default     = true
}

# --- Secrets: generated unless given (secrets.tf) -----------------------------------------------
# Characters: anything printable except `$` (Grafana expands `$...` in what it reads from a
# file) and backslash; `: `, `#` and quotes are fine (the user-data quotes every value).

variable "webhook_token" {
  description = "Token Grafana (and Alertmanager) send to the autoscaler's webhooks. Default: generated, see `terraform output -raw webhook_token`."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.webhook_token == null ? true : can(regex("^[^$\\\\\\x00-\\x1f\\x7f]{16,128}$", var.webhook_token))
    error_message = "webhook_token must be 16 to 128 printable characters, without $ or backslash."
  }
}

variable "drain_token" {
  description = "Token the autoscaler uses to drain a pool member before evicting it. Default: generated."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.drain_token == null ? true : can(regex("^[^$\\\\\\x00-\\x1f\\x7f]{16,128}$", var.drain_token))
    error_message = "drain_token must be 16 to 128 printable characters, without $ or backslash."
  }
}

variable "grafana_admin_password" {
  description = "Password of Grafana's admin user. Default: generated, see `terraform output -raw grafana_admin_password`."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.grafana_admin_password == null ? true : can(regex("^[^$\\\\\\x00-\\x1f\\x7f]{12,128}$", var.grafana_admin_password))
    error_message = "grafana_admin_password must be 12 to 128 printable characters, without $ or backslash."
  }
}

variable "prometheus_password" {
  description = "Password of Prometheus' user `prometheus` (Grafana and the autoscaler use it too). Default: generated, see `terraform output -raw prometheus_password`."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.prometheus_password == null ? true : can(regex("^[^$\\\\\\x00-\\x1f\\x7f]{12,72}$", var.prometheus_password))
    error_message = "prometheus_password must be 12 to 72 printable characters (bcrypt reads 72 bytes), without $ or backslash."
  }
}
