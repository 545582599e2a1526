variable "exoscale_key" {
  description = "Your Exoscale API key (EXO...), used by Terraform only. The autoscaler gets its own, narrower key (iam.tf)."
  type        = string
  sensitive   = true
}

variable "exoscale_secret" {
  description = "The secret of your Exoscale API key."
  type        = string
  sensitive   = true
}

variable "zone" {
  description = "The Exoscale zone for everything."
  type        = string
  default     = "ch-gva-2"

  validation {
    condition     = contains(["ch-gva-2", "ch-dk-2", "de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1", "hr-zag-1"], var.zone)
    error_message = "zone must be one of ch-gva-2, ch-dk-2, de-fra-1, de-muc-1, at-vie-1, at-vie-2, bg-sof-1, hr-zag-1."
  }
}

variable "monitor_template" {
  description = "Name of the monitor template registered with `poolpilot template register` (built by `nix build .#monitor-image`)."
  type        = string
  default     = "poolpilot-monitor"
}

variable "pool_template" {
  description = "Name of the pool member template registered with `poolpilot template register` (built by `nix build .#pool-node-image`)."
  type        = string
  default     = "poolpilot-pool-node"
}

variable "monitor_instance_type" {
  description = "Instance type of the monitor (Prometheus and Grafana want about 2 GiB)."
  type        = string
  default     = "standard.small"
}

variable "pool_instance_type" {
  description = "Instance type of the pool members."
  type        = string
  default     = "standard.micro"
}

variable "disk_size" {
  description = "Disk size of every instance, GiB (the templates need 10)."
  type        = number
  default     = 10
}

variable "pool_size" {
  description = "Initial size of the pool; the autoscaler changes it afterwards (Terraform ignores that drift)."
  type        = number
  default     = 1
}

variable "pool_min" {
  description = "The smallest size the autoscaler sets."
  type        = number
  default     = 1
}

variable "pool_max" {
  description = "The largest size the autoscaler sets: it bounds the bill."
  type        = number
  default     = 4

  validation {
    condition     = var.pool_max >= 1 && var.pool_max <= 20
    error_message = "pool_max must be between 1 and 20."
  }
}

variable "admin_cidr" {
  description = "Who may reach Grafana (3000), Prometheus (9090) and SSH, e.g. your address as 203.0.113.7/32."
  type        = string

  validation {
    condition     = can(cidrhost(var.admin_cidr, 0))
    error_message = "admin_cidr must be a CIDR such as 203.0.113.7/32."
  }
}

variable "ssh_key_name" {
  description = "Name of an SSH key registered in your Exoscale account, for root logins (optional)."
  type        = string
  default     = null
}

variable "webhook_token" {
  description = "Token Grafana (and Alertmanager) send to the autoscaler's webhooks; 16 characters or more (e.g. `openssl rand -hex 16`)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.webhook_token) >= 16
    error_message = "webhook_token must have 16 characters or more."
  }
}

variable "drain_token" {
  description = "Token the autoscaler uses to drain a pool member before evicting it; 16 characters or more."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.drain_token) >= 16
    error_message = "drain_token must have 16 characters or more."
  }
}

variable "grafana_admin_password" {
  description = "Password of Grafana's admin user."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.grafana_admin_password) >= 12
    error_message = "grafana_admin_password must have 12 characters or more."
  }
}
