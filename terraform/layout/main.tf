# Where everything goes: the zones, which machine runs in which, which templates each zone
# needs and the bucket each zone's images are uploaded to. A module of its own, with no
# provider, so that checks/terraform_test.py evaluates it with Terraform itself for one zone
# and for several (the root module needs the Exoscale provider, which cannot be loaded there).

variable "zones" {
  description = "The zones, in order: the first holds the monitor and the front."
  type        = list(string)
}

variable "front" {
  description = "Run the front; null: only with more than one zone."
  type        = bool
  default     = null
}

variable "profile" {
  description = "What runs: \"course\" (the slow app's pool in every zone) or \"redis\" (the key-value appliance: a Redis primary, a replica pool and an API pool, in one zone)."
  type        = string
  default     = "course"
  nullable    = false
}

variable "name_prefix" {
  description = "Prefix of every name."
  type        = string
}

variable "template_bucket" {
  description = "The first zone's image bucket; the other zones' buckets are this name with -ZONE appended."
  type        = string
}

locals {
  primary = var.zones[0]
  front   = var.front == null ? length(var.zones) > 1 : var.front

  redis = var.profile == "redis"

  # Templates are zonal. course: a pool image in every zone, the monitor's and the front's in
  # the first. redis (one zone): the monitor's, the Redis primary's, the replicas' and the kv
  # API members'.
  template_zones = local.redis ? {
    monitor = [local.primary], primary = [local.primary], replica = [local.primary], kv = [local.primary]
  } : { pool = var.zones, monitor = [local.primary], front = local.front ? [local.primary] : [] }
  templates = merge([for role, zones in local.template_zones : {
    for zone in zones : "${role}/${zone}" => { role = role, zone = zone }
  }]...)

  # Object storage is zonal and bucket names are global: one bucket per zone. The first zone's
  # is the name a single-zone deployment has always used, so adding zones re-uploads nothing.
  buckets = { for zone in var.zones : zone => zone == local.primary ? var.template_bucket : "${var.template_bucket}-${zone}" }
}

output "zones" {
  description = "The zones, in order."
  value       = var.zones

  precondition {
    condition     = !local.redis || (length(var.zones) == 1 && !local.front)
    error_message = "profile = \"redis\" runs in one zone without the front (the primary and its replicas in one place): give one zone (zone, or zones with one entry) and leave front unset or false."
  }
}

output "profile" {
  description = "What runs: course or redis."
  value       = var.profile
}

output "primary" {
  description = "The zone of the monitor and the front."
  value       = local.primary
}

output "front" {
  description = "Whether the front runs."
  value       = local.front
}

output "templates" {
  description = "Every template to register: \"ROLE/ZONE\" => { role, zone }."
  value       = local.templates
}

output "buckets" {
  description = "The image bucket of each zone."
  value       = local.buckets
}

output "iam_zones" {
  description = "The IAM policy's zone condition: every zone used."
  value       = "zone in [${join(", ", [for z in var.zones : "'${z}'"])}]"
}
