# profile = "redis": the key-value appliance (README, "Deploying to Exoscale"), in one zone.
#
# - The primary: one fixed instance holding the data (Redis with AOF), never scaled.
# - The replicas: an instance pool of Redis replicas of the primary, each with `poolpilot
#   replica`, whose /health (port 8080) says "in sync and not drained", and the Redis exporter.
# - The API: an instance pool of `poolpilot kv` members on 8080, writing to the primary and
#   reading from the replicas.
# - An NLB on port 80 for the API (the only port open to the world), and a second NLB on 6379
#   for the replicas, whose health check asks each replica's sidecar (HTTP /health on 8080), so
#   a replica out of sync or drained gets no reads.
#
# Why a second NLB, not a private network: the replicas come and go with the autoscaler, and the
# kv members need one stable address for them that only routes to in-sync replicas; the NLB is
# that address and that health check. Exoscale NLBs are public, but an NLB keeps the client's
# address, so the replicas' security group admits 6379 from the API members' group only: the
# world reaches the replicas' NLB and is dropped at the members. A private network would need
# its own addressing (a managed DHCP network, every member on it) and still no health-checked
# address; the NLB costs about 25 EUR a month (outputs.tf counts it).
#
# The primary admits 6379 from the replicas (replication) and the API members (writes) by
# security group: one zone, so the groups match the members' addresses. Redis has no password:
# only these groups reach it (protected-mode is off on purpose, nixos-modules/redis-*.nix).

locals {
  kv_pools = local.redis ? {
    replicas = { description = "Redis replicas of the primary, each with its sidecar", template = "replica" }
    api      = { description = "the key-value API (poolpilot kv)", template = "kv" }
  } : {}
}

resource "exoscale_compute_instance" "redis_primary" {
  count              = local.redis ? 1 : 0
  zone               = local.primary_zone
  name               = "${var.name_prefix}-redis-primary"
  template_id        = data.exoscale_template.redis["primary"].id
  type               = lower(var.redis_instance_type)
  disk_size          = var.disk_size
  ssh_keys           = local.ssh_key_name == null ? [] : [local.ssh_key_name]
  security_group_ids = [exoscale_security_group.redis_primary[0].id]
  # No user-data: the image has everything, and the primary needs no address but its own.
}

# The replicas and the API members: sized by the autoscaler, each pool on its own.
resource "exoscale_instance_pool" "kv" {
  for_each = local.kv_pools

  zone               = local.primary_zone
  name               = "${var.name_prefix}-${each.key}"
  description        = "poolpilot: ${each.value.description}, sized by the autoscaler"
  template_id        = data.exoscale_template.redis[each.value.template].id
  instance_type      = lower(var.pool_instance_type)
  disk_size          = var.disk_size
  size               = var.pool_size
  instance_prefix    = "${var.name_prefix}-${each.key}"
  key_pair           = local.ssh_key_name
  security_group_ids = [exoscale_security_group.kv[each.key].id]
  # Settings only: the primary's address (and the replicas' NLB for the API), the drain token.
  user_data = each.key == "api" ? module.userdata.kv : module.userdata.replica

  lifecycle {
    # The autoscaler owns the size once the pool exists.
    ignore_changes = [size]

    precondition {
      condition     = var.pool_min <= var.pool_size && var.pool_size <= var.pool_max
      error_message = "The bounds must hold 1 <= pool_min <= pool_size <= pool_max <= 20 (got pool_min = ${var.pool_min}, pool_size = ${var.pool_size}, pool_max = ${var.pool_max})."
    }
  }
}

# The API's NLB (the service's address) and the replicas' (the kv members' read address).
resource "exoscale_nlb" "kv" {
  for_each = local.redis ? toset(["api", "replicas"]) : toset([])

  zone        = local.primary_zone
  name        = "${var.name_prefix}-${each.key}"
  description = each.key == "api" ? "poolpilot: port 80 to the key-value API" : "poolpilot: port 6379 to the in-sync Redis replicas (for the API members only)"
}

# One service per NLB: the API's port 80 to 8080 on the kv members, the replicas' 6379 to Redis.
# Both health-check the member's 8080 /health: for a replica that is the sidecar, not Redis: a
# replica answers PING while it resyncs or has lost its primary.
locals {
  kv_services = local.redis ? {
    api      = { name = "http", port = 80, target_port = 8080, description = "port 80 to 8080 on every healthy kv member" }
    replicas = { name = "redis", port = 6379, target_port = 6379, description = "port 6379 to every replica whose sidecar says in sync" }
  } : {}
}

resource "exoscale_nlb_service" "kv" {
  for_each = local.kv_services

  zone             = local.primary_zone
  nlb_id           = exoscale_nlb.kv[each.key].id
  instance_pool_id = exoscale_instance_pool.kv[each.key].id
  name             = each.value.name
  description      = each.value.description
  protocol         = "tcp"
  port             = each.value.port
  target_port      = each.value.target_port
  strategy         = "round-robin"

  healthcheck {
    mode     = "http"
    port     = 8080
    uri      = "/health"
    interval = local.healthcheck.interval
    timeout  = local.healthcheck.timeout
    retries  = local.healthcheck.retries
  }
}

# Security groups: one per role. What each admits (the world reaches port 80 of the API's NLB
# only, that is 8080 on the API members):
# - the primary: 6379 from the replicas (replication) and the API members (writes); 9100
#   (node_exporter) and 9121 (the Redis exporter) from the monitor;
# - the replicas: 6379 from the API members (reads through their NLB, which keeps the client's
#   address); 8080 (the sidecar: /health for the NLB, /metrics and /admin/drain for the
#   monitor) from the NLB health checks and the monitor; 9100 and 9121 from the monitor;
# - the API members: 8080 from the world (clients through the NLB, which keeps their address,
#   and its health checks); 9100 from the monitor.
# SSH (22) from admin_cidrs on each (security.tf, local.admin_rules).
resource "exoscale_security_group" "redis_primary" {
  count       = local.redis ? 1 : 0
  name        = "${var.name_prefix}-redis-primary"
  description = "poolpilot Redis primary"
}

resource "exoscale_security_group" "kv" {
  for_each    = local.kv_pools
  name        = "${var.name_prefix}-${each.key}"
  description = "poolpilot ${each.value.description}"
}

locals {
  kv_groups = local.redis ? {
    primary  = exoscale_security_group.redis_primary[0].id
    replicas = exoscale_security_group.kv["replicas"].id
    api      = exoscale_security_group.kv["api"].id
  } : {}

  # name => { group, port, exactly one source: cidr, from (a group of kv_groups) or public (an
  # Exoscale public group), what }.
  kv_rules = local.redis ? {
    "primary-redis-replicas"   = { group = "primary", port = 6379, cidr = null, from = "replicas", public = null, what = "Redis, from the replicas (replication)" }
    "primary-redis-api"        = { group = "primary", port = 6379, cidr = null, from = "api", public = null, what = "Redis, from the API members (writes)" }
    "primary-node-exporter"    = { group = "primary", port = 9100, cidr = local.monitor_cidr, from = null, public = null, what = "node_exporter, from the monitor" }
    "primary-redis-exporter"   = { group = "primary", port = 9121, cidr = local.monitor_cidr, from = null, public = null, what = "the Redis exporter, from the monitor" }
    "replicas-redis-api"       = { group = "replicas", port = 6379, cidr = null, from = "api", public = null, what = "Redis, from the API members (reads, through the replicas' NLB)" }
    "replicas-sidecar-check"   = { group = "replicas", port = 8080, cidr = null, from = null, public = "public-nlb-healthcheck-sources", what = "the sidecar's /health, from the NLB health checks" }
    "replicas-sidecar-monitor" = { group = "replicas", port = 8080, cidr = local.monitor_cidr, from = null, public = null, what = "the sidecar, from the monitor (scrapes, drains)" }
    "replicas-node-exporter"   = { group = "replicas", port = 9100, cidr = local.monitor_cidr, from = null, public = null, what = "node_exporter, from the monitor" }
    "replicas-redis-exporter"  = { group = "replicas", port = 9121, cidr = local.monitor_cidr, from = null, public = null, what = "the Redis exporter, from the monitor" }
    "api-http"                 = { group = "api", port = 8080, cidr = "0.0.0.0/0", from = null, public = null, what = "the API, from clients and the NLB health checks" }
    "api-node-exporter"        = { group = "api", port = 9100, cidr = local.monitor_cidr, from = null, public = null, what = "node_exporter, from the monitor" }
  } : {}
}

resource "exoscale_security_group_rule" "kv" {
  for_each = local.kv_rules

  security_group_id      = local.kv_groups[each.value.group]
  description            = each.value.what
  type                   = "INGRESS"
  protocol               = "TCP"
  cidr                   = each.value.cidr
  user_security_group_id = each.value.from == null ? null : local.kv_groups[each.value.from]
  public_security_group  = each.value.public
  start_port             = each.value.port
  end_port               = each.value.port
}
