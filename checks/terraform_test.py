#!/usr/bin/env python3
"""Properties of terraform/ that matter on a real bill, read with python-hcl2.

- only exoscale_key and exoscale_secret lack a default (one apply into an empty account asks
  for nothing else);
- the pool's size is ignored by Terraform (the autoscaler owns it);
- both Exoscale secrets, every secret-looking variable, and every output that exposes one
  (a secret variable, a generated password, an API key's secret) are sensitive;
- no admin port is reachable without authentication: the only ports opened beyond the app's
  are 22 (the images allow keys only), 3000 (Grafana with its generated admin password) and
  9090 (Prometheus with its web config's basic auth, on by default); 9100 only from the
  monitor's group; nothing else;
- the user-data installs nothing: no package manager, no download, no container runtime;
- the autoscaler's IAM role allows exactly the operations poolpilot's daemons call, in the
  deployment's zone, and denies the rest; the template role exactly what `template push` and
  `template delete` call, plus object storage on the image bucket only.

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

# 0. Only the key and the secret are required.
required = {n for n, v in blocks["variable"].items() if "default" not in v}
check(required == {"exoscale_key", "exoscale_secret"}, f"variables without a default: {sorted(required)}")

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
secret_refs = [f"var.{n}" for n in secret_vars] + [f"local.{n}" for n in secret_vars] + [
    "random_password.", "exoscale_iam_api_key.autoscaler[0].secret", "exoscale_iam_api_key.templates[0].secret"]
for n, o in blocks["output"].items():
    text = str(o.get("value"))
    if any(r in text for r in secret_refs):
        check(o.get("sensitive") is True, f"output {n} exposes a secret and must be sensitive")

# 3. No admin port without authentication.
def text_of(path):
    return open(os.path.join(DIR, "..", path)).read()


monitor_nix, image_nix = text_of("nixos-modules/monitor.nix"), text_of("images/exoscale.nix")
authenticated = {
    22: "PasswordAuthentication = false" in image_nix,
    3000: "admin_password = \"$__file{/run/credentials/grafana.service/admin-password}\"" in monitor_nix,
    9090: "webConfigFile = \"/run/credentials/prometheus.service/web-config\"" in monitor_nix
    and blocks["variable"]["prometheus_auth"].get("default") is True,
}
for port, ok in authenticated.items():
    check(ok, f"port {port} is opened to admin_cidrs but its authentication is not configured")
admin = next((l["admin_rules"] for l in blocks["locals"] if "admin_rules" in l), None)
check(admin is not None, "expected local.admin_rules (the rules opened to admin_cidrs)")
admin_ports = set(int(p) for p in re.findall(r"port = (\d+)", str(admin))) | set(
    int(p) for p in re.findall(r"'port': (\d+)", str(admin)))
check(admin_ports and admin_ports <= set(authenticated), f"admin_cidrs reach ports {sorted(admin_ports)}, not only {sorted(authenticated)}")
for (t, name), r in blocks["resource"].items():
    if t != "exoscale_security_group_rule":
        continue
    check(unq(r.get("type", "")).upper() == "INGRESS", f"rule {name}: only ingress rules are expected")
    cidr = unq(r.get("cidr", ""))
    if name == "admin":
        check("each.value.cidr" in str(cidr), "the admin rules must take their CIDR from admin_cidrs")
        continue
    start, end = int(r.get("start_port")), int(r.get("end_port"))
    if "user_security_group_id" in r:
        check((start, end) == (9100, 9100), f"rule {name}: only node_exporter is opened to a group")
    else:
        check((start, end, cidr) == (8080, 8080, "0.0.0.0/0"), f"rule {name}: only the app port is opened to the world, found {start}-{end} to {cidr}")

# 4. The user-data installs nothing.
forbidden = re.compile(
    r"\b(packages|package_update|package_upgrade|runcmd|bootcmd|apt|apt-get|yum|dnf|apk|pip|npm|"
    r"nix-env|nix profile|curl|wget|docker|podman|containerd|snap)\b")
userdata = sorted(glob.glob(os.path.join(DIR, "userdata", "*.tftpl")))
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

# 5. The IAM roles allow exactly what poolpilot uses, in the deployment's zone.
used = {"get-instance-pool", "scale-instance-pool", "evict-instance-pool-members", "list-instances",
        "get-operation", "get-load-balancer", "list-load-balancers"}
template_used = {"list-templates", "get-template", "register-template", "delete-template", "get-operation"}
ops = tops = None
for l in blocks["locals"]:
    if "autoscaler_operations" in l:
        ops = {unq(x) for x in l["autoscaler_operations"]}
    if "template_operations" in l:
        tops = {unq(x) for x in l["template_operations"]}
check(ops == used, f"the autoscaler's IAM operations differ from what poolpilot calls: {sorted(ops or [])} vs {sorted(used)}")
check(tops == template_used, f"the template IAM operations differ: {sorted(tops or [])} vs {sorted(template_used)}")
roles = {name: b for (t, name), b in blocks["resource"].items() if t == "exoscale_iam_role"}
check(set(roles) == {"autoscaler", "templates"}, f"expected the IAM roles autoscaler and templates: {sorted(roles)}")


def rules_of(role, service):
    policy = role.get("policy", {})
    policy = policy[0] if isinstance(policy, list) else policy
    check(unq(policy.get("default_service_strategy")) == "deny", "a role's default strategy must be deny")
    services = policy.get("services", {})
    return {unq(k) for k in services}, services.get(service, services.get(f'"{service}"', {})).get("rules", [])


for name, role in roles.items():
    check("editable" not in role, f"role {name}: editable = false would freeze its policy (drop it)")
    names, rules = rules_of(role, "compute")
    check(names == ({"compute"} if name == "autoscaler" else {"compute", "sos"}), f"role {name}: services {sorted(names)}")
    actions = [unq(x.get("action")) for x in rules]
    check(actions == ["allow", "deny"], f"role {name}: the compute rules must be one allow then a deny-all: {actions}")
    check("zone == '${var.zone}'" in str(rules[0].get("expression")), f"role {name}: the allow rule must be scoped to var.zone")
    check(unq(rules[-1].get("expression")) == "true", f"role {name}: the last rule must deny everything else")
    if name == "templates":
        _, sos = rules_of(role, "sos")
        check([unq(x.get("action")) for x in sos] == ["allow", "deny"] and "parameters.bucket ==" in str(sos[0].get("expression")),
              f"role templates: object storage must be allowed on the image bucket only: {sos}")

# And the poolpilot client's operation names agree with the Rust source.
src = open(os.path.join(os.path.dirname(__file__), "..", "src", "exoscale", "metrics.rs")).read()
called = set(re.findall(r'=> "([a-z-]+)"', src)) - {"other"}
# Called by the admin commands (pool status, template push/delete), not by the daemons;
# get-instance only by the client's own tests.
admin_only = {"list-zones", "list-instance-pools", "list-instance-types", "get-instance"} | template_used - used
check(called - admin_only == used, f"src/exoscale/metrics.rs operations minus admin ones: {sorted(called - admin_only)}")

if failures:
    for f in failures:
        print(f"terraform: FAIL: {f}")
    sys.exit(1)
print(f"terraform: ok: {len(blocks['resource'])} resources, {len(blocks['variable'])} variables, "
      f"{len(blocks['output'])} outputs checked")
