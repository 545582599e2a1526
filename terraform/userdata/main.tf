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
  description = "Each zone's instance pool id, zone => id (EXOSCALE_INSTANCEPOOL_ID); empty with `kv`."
  type        = map(string)
  default     = {}
}

variable "kv" {
  description = <<-EOT
    profile = "redis": the key-value appliance, in the monitor's zone (null: the course's pools).
    primary: the Redis primary's address; replicas: the replicas' NLB address.
  EOT
  type = object({
    primary  = string
    replicas = string
  })
  default = null

  validation {
    condition = var.kv == null ? true : alltrue([
      for a in [var.kv.primary, var.kv.replicas] : can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", a))
    ])
    error_message = "kv: primary and replicas must be IPv4 addresses (they go into Redis' and poolpilot's settings)."
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

variable "kv_pools" {
  description = "profile = \"redis\": the replica and API pools' ids, { replicas = ID, api = ID }, in the monitor's zone (EXOSCALE_INSTANCEPOOL_ID names them replicas=ZONE:ID,api=ZONE:ID, the names the kv monitor's per-pool tables use); null: the course's pools."
  type = object({
    replicas = string
    api      = string
  })
  default = null
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
  # Two maps of environment files, each file's KEY="VALUE" lines: the machines' own (members,
  # front) and the monitor's. Apart, because a member's user-data must not depend on the pool
  # ids (the pools depend on it: one map would be a dependency cycle for Terraform).
  env = { for file, vars in {
    # The pool members' app: its drain token.
    pool = {
      POOLPILOT_DRAIN_TOKEN = var.drain_token
    }
    # profile = "redis": a replica (its Redis follows the primary, nixos-modules/redis-replica.nix;
    # its sidecar's drain switch), and an API member (`poolpilot kv`: writes to the primary,
    # reads through the replicas' NLB, its drain switch).
    replica = var.kv == null ? {} : {
      POOLPILOT_REDIS_PRIMARY = var.kv.primary
      POOLPILOT_DRAIN_TOKEN   = var.drain_token
    }
    kv = var.kv == null ? {} : {
      REDIS_URL             = "redis://${var.kv.primary}:6379"
      REDIS_REPLICAS_URL    = "redis://${var.kv.replicas}:6379"
      POOLPILOT_DRAIN_TOKEN = var.drain_token
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
  monitor_env = { for file, vars in {
    # The monitor's discovery agent and autoscaler: the API only. One pool in the monitor's
    # zone: its id alone, as ever; else ZONE:ID for each pool, comma-separated (one discovery
    # agent and one autoscaler over every pool, each pool named after its zone).
    api = {
      EXOSCALE_ZONE = var.zone
      EXOSCALE_INSTANCEPOOL_ID = var.kv_pools != null ? "replicas=${var.zone}:${var.kv_pools.replicas},api=${var.zone}:${var.kv_pools.api}" : (
        length(var.pools) == 1 && contains(keys(var.pools), var.zone) ? var.pools[var.zone] : join(",", [
          for z, id in var.pools : "${z}:${id}"
      ]))
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
    } : file => join("", [for k, v in vars :
      "${k}=\"${replace(replace(replace(replace(v, "\\", "\\\\"), "\"", "\\\""), "$", "\\$"), "`", "\\`")}\"\n"
  ]) }

  # profile = "redis": the primary is no pool member, so discovery does not list it; the
  # monitor's Prometheus reads it from this file_sd file (nixos-modules/kv-monitor.nix), its
  # node_exporter and its Redis exporter, labelled like discovery's targets. null: no file.
  redis_targets = var.kv == null ? null : jsonencode([
    for name, port in { node = 9100, redis = 9121 } : {
      targets                = ["${var.kv.primary}:${port}"]
      labels                 = { exoscale_target_name = name, exoscale_target_port = tostring(port), exoscale_instance_name = "redis-primary", exoscale_zone = var.zone }
    }
  ])

  # Prometheus' web config (its own format): basic auth for the user `prometheus`, or none.
  prometheus_web_config = var.prometheus_password_hash == null ? "# No authentication (prometheus_auth = false).\n{}\n" : "basic_auth_users:\n  prometheus: ${jsonencode(var.prometheus_password_hash)}\n"
}

output "replica" {
  description = "A Redis replica's cloud-config (profile = \"redis\"; null otherwise)."
  sensitive   = true
  value = var.kv == null ? null : templatefile("${path.module}/pool-node.yaml.tftpl", {
    env = local.env.replica
  })
}

output "kv" {
  description = "A kv API member's cloud-config (profile = \"redis\"; null otherwise)."
  sensitive   = true
  value = var.kv == null ? null : templatefile("${path.module}/pool-node.yaml.tftpl", {
    env = local.env.kv
  })
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
    api_env                = local.monitor_env.api
    autoscaler_env         = local.monitor_env.autoscaler
    webhook_token          = var.webhook_token
    grafana_admin_password = var.grafana_admin_password
    grafana_secret_key     = var.grafana_secret_key
    prometheus_password    = var.prometheus_password
    prometheus_web_config  = local.prometheus_web_config
    redis_targets          = local.redis_targets
  })

  precondition {
    condition     = (var.kv_pools == null) != (length(var.pools) == 0) && (var.kv == null) == (var.kv_pools == null)
    error_message = "The monitor scales either the course's pools (pools, at least one) or the key-value appliance's (kv and kv_pools), not both."
  }
}
