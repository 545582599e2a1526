# The autoscaler's own key: it may read the pool, its members, operations and the NLB, scale the
# pool and evict members; nothing else. These are the operations poolpilot's client calls.
locals {
  autoscaler_operations = [
    "get-instance-pool",
    "scale-instance-pool",
    "evict-instance-pool-members",
    "list-instances",
    "get-instance",
    "get-operation",
    "get-load-balancer",
    "list-load-balancers",
  ]
}

resource "exoscale_iam_role" "autoscaler" {
  name        = "poolpilot-autoscaler"
  description = "poolpilot discovery and autoscaler: read the pool and NLB, scale and evict"
  editable    = false

  policy = {
    default_service_strategy = "deny"
    services = {
      compute = {
        type = "rules"
        rules = [
          {
            action     = "allow"
            expression = "operation in [${join(", ", [for op in local.autoscaler_operations : "'${op}'"])}]"
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
  name    = "poolpilot-autoscaler"
  role_id = exoscale_iam_role.autoscaler.id
}
