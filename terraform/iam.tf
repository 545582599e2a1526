# Two narrow API keys, so no machine holds the operator's key (create_iam_keys = false turns
# them off for a key without IAM rights; see variables.tf).
#
# The autoscaler's key (on the monitor, for the discovery agent and the autoscaler): exactly the
# operations poolpilot's client calls (checks/terraform_test.py compares this list with
# src/exoscale/metrics.rs), in this deployment's zones only (every zone holds a pool the one
# monitor reads and scales). Not `get-instance`: nothing calls it, and its answer carries any
# instance's user-data.
#
# The template key (Terraform's own `poolpilot template push` and `template delete`, templates.tf):
# register, read and delete templates in the zones, and object storage on the image buckets only
# (one per zone).
#
# The policy language (Exoscale IAM, CEL) binds `operation` and `zone` for every call and
# `parameters.bucket` for object storage; a rule on a pool's id would need a binding for path
# parameters that Exoscale does not document, so the autoscaler's key is scoped to the zone, not
# to the pool.
locals {
  autoscaler_operations = [
    "get-instance-pool",
    "scale-instance-pool",
    "evict-instance-pool-members",
    "list-instances",
    "get-operation",
    "get-load-balancer",
    "list-load-balancers",
  ]
  template_operations = [
    "list-templates",
    "get-template",
    "register-template",
    "delete-template",
    "get-operation",
  ]
  quoted_autoscaler_operations = join(", ", [for op in local.autoscaler_operations : "'${op}'"])
  quoted_template_operations   = join(", ", [for op in local.template_operations : "'${op}'"])
  quoted_buckets               = join(", ", [for b in values(module.layout.buckets) : "'${b}'"])

  # The keys each consumer uses: its own, or the operator's without IAM rights.
  autoscaler_key    = var.create_iam_keys ? exoscale_iam_api_key.autoscaler[0].key : var.exoscale_key
  autoscaler_secret = var.create_iam_keys ? exoscale_iam_api_key.autoscaler[0].secret : var.exoscale_secret
  template_key      = var.create_iam_keys ? exoscale_iam_api_key.templates[0].key : var.exoscale_key
  template_secret   = var.create_iam_keys ? exoscale_iam_api_key.templates[0].secret : var.exoscale_secret
}

resource "exoscale_iam_role" "autoscaler" {
  count       = var.create_iam_keys ? 1 : 0
  name        = "${var.name_prefix}-autoscaler"
  description = "poolpilot discovery and autoscaler: read the pools and NLBs, scale and evict, in ${join(", ", local.zones)}"

  policy = {
    default_service_strategy = "deny"
    services = {
      compute = {
        type = "rules"
        rules = [
          {
            action     = "allow"
            expression = "${module.layout.iam_zones} && operation in [${local.quoted_autoscaler_operations}]"
          },
          {
            action     = "deny"
            expression = "true"
          },
        ]
      }
    }
  }
}

resource "exoscale_iam_api_key" "autoscaler" {
  count   = var.create_iam_keys ? 1 : 0
  name    = "${var.name_prefix}-autoscaler"
  role_id = exoscale_iam_role.autoscaler[0].id
}

resource "exoscale_iam_role" "templates" {
  count       = var.create_iam_keys ? 1 : 0
  name        = "${var.name_prefix}-templates"
  description = "poolpilot template push/delete: templates in ${join(", ", local.zones)}, objects in ${join(", ", values(module.layout.buckets))}"

  policy = {
    default_service_strategy = "deny"
    services = {
      compute = {
        type = "rules"
        rules = [
          {
            action     = "allow"
            expression = "${module.layout.iam_zones} && operation in [${local.quoted_template_operations}]"
          },
          {
            action     = "deny"
            expression = "true"
          },
        ]
      }
      sos = {
        type = "rules"
        rules = [
          {
            action     = "allow"
            expression = "parameters.bucket in [${local.quoted_buckets}]"
          },
          {
            action     = "deny"
            expression = "true"
          },
        ]
      }
    }
  }
}

resource "exoscale_iam_api_key" "templates" {
  count   = var.create_iam_keys ? 1 : 0
  name    = "${var.name_prefix}-templates"
  role_id = exoscale_iam_role.templates[0].id
}
