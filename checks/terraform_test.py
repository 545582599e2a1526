#!/usr/bin/env python3
"""Properties of terraform/ that matter on a real bill, read with python-hcl2.

- the pool's size is ignored by Terraform (the autoscaler owns it);
- both Exoscale secrets, every secret-looking variable, and every output that exposes one are
  sensitive;
- no security group rule opens 9100, 9090, 3000 or 8090 to 0.0.0.0/0 (or ::/0);
- the user-data installs nothing: no package manager, no download, no container runtime;
- the autoscaler's IAM role allows exactly the operations poolpilot's client uses, and denies
  the rest.

Usage: checks/terraform_test.py [terraform/]     Needs: pip install python-hcl2
"""
import glob
import os
import re
import sys

import hcl2

DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "terraform")
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def unq(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


blocks = {"resource": {}, "variable": {}, "output": {}, "data": {}, "locals": []}
for path in sorted(glob.glob(os.path.join(DIR, "*.tf"))):
    with open(path) as f:
        doc = hcl2.load(f)
    for r in doc.get("resource", []):
        for rtype, named in r.items():
            for name, body in named.items():
                blocks["resource"][(unq(rtype), unq(name))] = body
    for v in doc.get("variable", []):
        for name, body in v.items():
            blocks["variable"][unq(name)] = body
    for o in doc.get("output", []):
        for name, body in o.items():
            blocks["output"][unq(name)] = body
    blocks["locals"].extend(doc.get("locals", []))

# 1. ignore_changes covers the pool size.
pools = [b for (t, _), b in blocks["resource"].items() if t == "exoscale_instance_pool"]
check(len(pools) == 1, f"expected one instance pool, found {len(pools)}")
for p in pools:
    lifecycle = p.get("lifecycle", [{}])
    lifecycle = lifecycle[0] if isinstance(lifecycle, list) else lifecycle
    ignored = [unq(str(x)).replace("${", "").replace("}", "") for x in lifecycle.get("ignore_changes", [])]
    check("size" in ignored, f"the pool's lifecycle.ignore_changes does not cover size: {ignored}")

# 2. Secrets are sensitive, and so is every output that exposes one.
secret_vars = {n for n in blocks["variable"] if re.search(r"secret|password|token|^exoscale_key$", n)}
check({"exoscale_key", "exoscale_secret"} <= set(blocks["variable"]), "exoscale_key and exoscale_secret must be variables")
for n in secret_vars:
    check(blocks["variable"][n].get("sensitive") is True, f"variable {n} must be sensitive")
    check(bool(blocks["variable"][n].get("description")), f"variable {n} needs a description")
secret_refs = [f"var.{n}" for n in secret_vars] + ["exoscale_iam_api_key.autoscaler.secret"]
for n, o in blocks["output"].items():
    text = str(o.get("value"))
    if any(r in text for r in secret_refs):
        check(o.get("sensitive") is True, f"output {n} exposes a secret and must be sensitive")

# 3. No rule opens the monitoring ports to the world.
closed = {9100, 9090, 3000, 8090}
for (t, name), r in blocks["resource"].items():
    if t != "exoscale_security_group_rule":
        continue
    cidr = unq(r.get("cidr", ""))
    try:
        start, end = int(r.get("start_port")), int(r.get("end_port"))
    except (TypeError, ValueError):
        start, end = 0, 65535
    world = cidr in ("0.0.0.0/0", "::/0")
    if world:
        check(not any(start <= p <= end for p in closed), f"rule {name} opens {start}-{end} to {cidr}")
    check(unq(r.get("type", "")).upper() == "INGRESS", f"rule {name}: only ingress rules are expected")

# 4. The user-data installs nothing.
forbidden = re.compile(
    r"\b(packages|package_update|package_upgrade|runcmd|bootcmd|apt|apt-get|yum|dnf|apk|pip|npm|"
    r"nix-env|nix profile|curl|wget|docker|podman|containerd|snap)\b")
userdata = sorted(glob.glob(os.path.join(DIR, "userdata", "*")))
check(len(userdata) >= 2, "expected user-data templates for the monitor and the pool")
for path in userdata:
    text = open(path).read()
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
    check(text.startswith("#cloud-config"), f"{path}: must be a cloud-config")
    for l in lines:
        m = forbidden.search(l)
        check(m is None, f"{path}: installs or downloads something: {l.strip()}")
    top = {l.split(":")[0] for l in lines if l and not l.startswith(" ") and ":" in l}
    check(top <= {"write_files"}, f"{path}: only write_files is allowed, found {sorted(top)}")

# 5. The IAM role allows exactly what poolpilot uses.
used = {"get-instance-pool", "scale-instance-pool", "evict-instance-pool-members", "list-instances",
        "get-instance", "get-operation", "get-load-balancer", "list-load-balancers"}
ops = None
for l in blocks["locals"]:
    if "autoscaler_operations" in l:
        ops = {unq(x) for x in l["autoscaler_operations"]}
check(ops == used, f"the IAM operations differ from what poolpilot calls: {sorted(ops or [])} vs {sorted(used)}")
roles = [b for (t, _), b in blocks["resource"].items() if t == "exoscale_iam_role"]
check(len(roles) == 1, "expected one IAM role")
for r in roles:
    policy = r.get("policy", {})
    policy = policy[0] if isinstance(policy, list) else policy
    check(unq(policy.get("default_service_strategy")) == "deny", "the role's default strategy must be deny")
    services = policy.get("services", {})
    check(set(map(unq, services)) == {"compute"}, f"only the compute service may be allowed: {list(services)}")
    rules = services.get("compute", services.get('"compute"', {})).get("rules", [])
    actions = [unq(x.get("action")) for x in rules]
    check(actions == ["allow", "deny"], f"the rules must be one allow then a deny-all: {actions}")
    check(unq(rules[-1].get("expression")) == "true", "the last rule must deny everything else")

# And the poolpilot client's operation names agree with the Rust source.
src = open(os.path.join(os.path.dirname(__file__), "..", "src", "exoscale", "metrics.rs")).read()
called = set(re.findall(r'=> "([a-z-]+)"', src)) - {"other"}
admin_only = {"list-zones", "list-instance-pools", "list-instance-types", "list-templates",
              "register-template", "get-template", "delete-template"}
check(called - admin_only == used, f"src/exoscale/metrics.rs operations minus admin ones: {sorted(called - admin_only)}")

if failures:
    for f in failures:
        print(f"terraform: FAIL: {f}")
    sys.exit(1)
print(f"terraform: ok: {len(blocks['resource'])} resources, {len(blocks['variable'])} variables, "
      f"{len(blocks['output'])} outputs checked")
