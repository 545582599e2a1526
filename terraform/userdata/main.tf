# The user-data of every machine (monitor, pool members, front), rendered from settings: a
# module of its own, with no provider, so that checks/userdata_test.py renders it with
# Terraform itself and parses the result as cloud-init and systemd do.
#
# Every file's content is a JSON string in the YAML (YAML reads JSON), so no character of a
# token can change the YAML's meaning. Environment files are for systemd's EnvironmentFile:
# each value double-quoted, inside which systemd (like a POSIX shell) takes \ " $ ` only
# escaped.

variable "zone" {
  description = "The monitor's zone (EXOSCALE_ZONE): the default zone of the pools."
  type        = string
}

variable "pools" {
  description = "Each zone's instance pool id, zone => id (EXOSCALE_INSTANCEPOOL_ID)."
  type        = map(string)

  validation {
    condition     = length(var.pools) >= 1
    error_message = "pools: at least one zone's pool."
  }
}

variable "front_backends" {
  description = "The front's backends, zone => NLB address (each becomes ZONE=http://ADDRESS:80); empty: no front."
  type        = map(string)
  default     = {}
}

variable "elastic_ip" {
  description = "The front's Elastic IP, which its image configures on `lo` (null: no front)."
  type        = string
  default     = null
}

variable "api_key" {
  description = "The API key of the discovery agent and the autoscaler."
  type        = string
  sensitive   = true
}

variable "api_secret" {
  description = "Its secret."
  type        = string
  sensitive   = true
}

variable "webhook_token" {
  description = "The autoscaler's webhook token (Grafana and Alertmanager send it)."
  type        = string
  sensitive   = true
}

variable "drain_token" {
  description = "The pool members' drain token (the autoscaler sends it)."
  type        = string
  sensitive   = true
}

variable "pool_min" {
  description = "The autoscaler's lower bound."
  type        = number
}

variable "pool_max" {
  description = "The autoscaler's upper bound."
  type        = number
}

variable "drain_wait_seconds" {
  description = "How long the autoscaler waits between draining a member and evicting it."
  type        = number
}

variable "grafana_admin_password" {
  description = "Grafana's admin password."
  type        = string
  sensitive   = true
}

variable "grafana_secret_key" {
  description = "Grafana's secret key (encrypts its database's secrets)."
  type        = string
  sensitive   = true
}

variable "prometheus_password" {
  description = "Prometheus' password (user prometheus), for Grafana and the autoscaler."
  type        = string
  sensitive   = true
}

variable "prometheus_password_hash" {
  description = "Its bcrypt hash, for Prometheus' web config; null: Prometheus without authentication."
  type        = string
  sensitive   = true
  default     = null
}

locals {
  env = { for file, vars in {
    # The pool members' app: its drain token.
    pool = {
      POOLPILOT_DRAIN_TOKEN = var.drain_token
    }
    # The monitor's discovery agent and autoscaler: the API only. One pool in the monitor's
    # zone: its id alone, as ever; else ZONE:ID for each pool, comma-separated (one discovery
    # agent and one autoscaler over every pool, each pool named after its zone).
    api = {
      EXOSCALE_ZONE = var.zone
      EXOSCALE_INSTANCEPOOL_ID = length(var.pools) == 1 && contains(keys(var.pools), var.zone) ? var.pools[var.zone] : join(",", [
        for z, id in var.pools : "${z}:${id}"
      ])
      EXOSCALE_API_KEY    = var.api_key
      EXOSCALE_API_SECRET = var.api_secret
    }
    # The autoscaler only.
    autoscaler = {
      POOLPILOT_WEBHOOK_TOKEN       = var.webhook_token
      POOLPILOT_DRAIN_TOKEN         = var.drain_token
      POOLPILOT_MIN                 = tostring(var.pool_min)
      POOLPILOT_MAX                 = tostring(var.pool_max)
      POOLPILOT_PROMETHEUS_PASSWORD = var.prometheus_password
      POOLPILOT_DRAIN_WAIT          = "${var.drain_wait_seconds}s"
    }
    # The front (read by its image's units, not by poolpilot itself): the backends, each
    # zone's NLB, which the front unit passes as --backend flags; the Elastic IP, which a unit
    # adds to `lo` so the front answers on it.
    front = var.elastic_ip == null ? {} : {
      POOLPILOT_FRONT_BACKENDS = join(",", [for z, ip in var.front_backends : "${z}=http://${ip}:80"])
      POOLPILOT_ELASTIC_IP     = var.elastic_ip
    }
    } : file => join("", [for k, v in vars :
      "${k}=\"${replace(replace(replace(replace(v, "\\", "\\\\"), "\"", "\\\""), "$", "\\$"), "`", "\\`")}\"\n"
  ]) }

  # Prometheus' web config (its own format): basic auth for the user `prometheus`, or none.
  prometheus_web_config = var.prometheus_password_hash == null ? "# No authentication (prometheus_auth = false).\n{}\n" : "basic_auth_users:\n  prometheus: ${jsonencode(var.prometheus_password_hash)}\n"
}

output "pool" {
  description = "The pool members' cloud-config."
  sensitive   = true
  value = templatefile("${path.module}/pool-node.yaml.tftpl", {
    env = local.env.pool
  })
}

output "front" {
  description = "The front's cloud-config (null without the front)."
  value = var.elastic_ip == null ? null : templatefile("${path.module}/front.yaml.tftpl", {
    env = local.env.front
  })
}

output "monitor" {
  description = "The monitor's cloud-config."
  sensitive   = true
  value = templatefile("${path.module}/monitor.yaml.tftpl", {
    api_env                = local.env.api
    autoscaler_env         = local.env.autoscaler
    webhook_token          = var.webhook_token
    grafana_admin_password = var.grafana_admin_password
    grafana_secret_key     = var.grafana_secret_key
    prometheus_password    = var.prometheus_password
    prometheus_web_config  = local.prometheus_web_config
  })
}
