#!/usr/bin/env python3
"""Properties of terraform/ that matter on a real bill, read with python-hcl2 (and, where
Terraform is installed, evaluated by Terraform itself for one zone and for two).

- only exoscale_key and exoscale_secret lack a default (one apply into an empty account asks
  for nothing else);
- zones: a pool, an NLB and an NLB service per zone (for_each over the zones), the pool's
  template in every zone, one monitor and one front (with its Elastic IP) in the first zone;
  the layout module, evaluated for one zone and for two, puts each template and bucket where
  it belongs; the zones variable refuses duplicates, unknown zones and an empty list;
- each pool's size is ignored by Terraform (the autoscaler owns it);
- both Exoscale secrets, every secret-looking variable, and every output that exposes one
  (a secret variable, a generated password, an API key's secret) are sensitive;
- no admin port is reachable without authentication: the only ports opened beyond the app's
  are 22 (the images allow keys only), 3000 (Grafana with its generated admin password) and
  9090 (Prometheus with its web config's basic auth, on by default); 9100 only from the
  monitor's address; the world reaches 8080 only without the front and 80 only on the front;
  with the front, 8080 admits the front, the monitor and the NLB health checks; the front's
  SSH never opens to the whole world;
- the user-data installs nothing: no package manager, no download, no container runtime;
- the autoscaler's IAM role allows exactly the operations poolpilot's daemons call, in the
  deployment's zones, and denies the rest; the template role exactly what `template push` and
  `template delete` call, plus object storage on the image buckets only;
- the hourly cost, evaluated by Terraform, is the README's for one zone and for two with the
  front, and null with a note for an unknown instance type;
- profile = "redis": a fixed primary, a replica pool and an API pool in the one zone, the API's
  NLB on 80 and the replicas' on 6379, both health-checked on HTTP /health at 8080 (the kv
  member, the replica's sidecar); the course's resources keep their expressions (app_zones is
  every zone unless redis); its rules exactly as listed (only the API members' 8080 open to the
  world, Redis from the replicas' and the API's groups only, exporters from the monitor); the
  layout refuses it with two zones or the front; its cost evaluated by Terraform;
- `terraform fmt -check -recursive` passes, and every .nix file parses (nix-instantiate); every
  image templates.tf builds is a flake output and has images/<role>.nix; the kv monitor's
  Prometheus configuration passes promtool.

Usage: checks/terraform_test.py [terraform/]     Needs: pip install python-hcl2
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

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

# 1. A pool, an NLB and an NLB service per zone; ignore_changes covers each pool's size.
res = blocks["resource"]
pools = [b for (t, _), b in res.items() if t == "exoscale_instance_pool"]
check(len(pools) == 2, f"expected two instance pool resources (the course's, for_each over the zones; the redis profile's kv), found {len(pools)}")
for t, name in [("exoscale_instance_pool", "app"), ("exoscale_nlb", "app"), ("exoscale_nlb_service", "http")]:
    r = res.get((t, name), {})
    check(r.get("for_each") == "${toset(local.app_zones)}", f"{t}.{name} must be one per zone (none with profile = redis): for_each = {r.get('for_each')!r}")
    check(r.get("zone") == "${each.key}", f"{t}.{name} must be in its zone: zone = {r.get('zone')!r}")
check(res.get(("exoscale_nlb_service", "http"), {}).get("instance_pool_id") == "${exoscale_instance_pool.app[each.key].id}",
      "each zone's NLB service must send to that zone's pool")
check(res.get(("exoscale_nlb_service", "http"), {}).get("nlb_id") == "${exoscale_nlb.app[each.key].id}",
      "each zone's NLB service must belong to that zone's NLB")
check(res.get(("exoscale_instance_pool", "app"), {}).get("template_id") == "${data.exoscale_template.pool[each.key].id}",
      "each zone's pool must use the pool template registered in that zone")
for p in pools:
    lifecycle = p.get("lifecycle", [{}])
    lifecycle = lifecycle[0] if isinstance(lifecycle, list) else lifecycle
    ignored = [unq(str(x)).replace("${", "").replace("}", "") for x in lifecycle.get("ignore_changes", [])]
    check("size" in ignored, f"the pool's lifecycle.ignore_changes does not cover size: {ignored}")
monitor = res.get(("exoscale_compute_instance", "monitor"), {})
check(monitor.get("zone") == "${local.primary_zone}" and "count" not in monitor and "for_each" not in monitor,
      "one monitor, in the first zone")
front = res.get(("exoscale_compute_instance", "front"), {})
eip = res.get(("exoscale_elastic_ip", "front"), {})
check(front.get("count") == "${local.front ? 1 : 0}" and front.get("zone") == "${local.primary_zone}",
      f"the front: one VM in the first zone, only with local.front: count = {front.get('count')!r}")
check(eip.get("count") == "${local.front ? 1 : 0}" and eip.get("zone") == "${local.primary_zone}",
      "the front's Elastic IP: in the first zone, only with local.front")
check(front.get("elastic_ip_ids") == ["${exoscale_elastic_ip.front[0].id}"], f"the Elastic IP must be attached to the front: {front.get('elastic_ip_ids')!r}")
check(front.get("security_group_ids") == ["${exoscale_security_group.front[0].id}"], "the front must be in its own security group only")
check(front.get("user_data") == "${module.userdata.front}", "the front's user-data is the userdata module's front output")
check("healthcheck" not in eip, "the Elastic IP is a manual one (the front image puts it on lo); a managed one's check would only add a way to drop traffic")
templates = res.get(("terraform_data", "template"), {})
check(templates.get("for_each") == "${module.layout.templates}", "the templates must be pushed per role and zone (module.layout.templates)")
datas = {}
for path in sorted(glob.glob(os.path.join(DIR, "*.tf"))):
    with open(path) as f:
        for d in hcl2.load(f).get("data", []):
            for dtype, named in d.items():
                for name, body in named.items():
                    datas[(unq(dtype), unq(name))] = body
check(datas.get(("exoscale_template", "pool"), {}).get("for_each") == "${toset(local.app_zones)}", "the pool template must be read in every zone (none with profile = redis)")
check(datas.get(("exoscale_template", "monitor"), {}).get("zone") == "${local.primary_zone}", "the monitor template: the first zone")
check(datas.get(("exoscale_template", "front"), {}).get("count") == "${local.front ? 1 : 0}", "the front template: only with the front")

# 1b. profile = "redis": a fixed primary, a replica pool and an API pool, the API's NLB on 80
# and the replicas' on 6379 (health-checked through the sidecar), nothing of the course's.
# The course's resources keep their expressions: app_zones is every zone unless redis.
tmpl_locals = next((l for l in blocks["locals"] if "app_zones" in l), {})
check(tmpl_locals.get("app_zones") == "${local.redis ? [] : local.zones}" and tmpl_locals.get("redis") == '${module.layout.profile == "redis"}',
      f"local.app_zones must be every zone for the course and none for redis: {tmpl_locals.get('app_zones')!r}, {tmpl_locals.get('redis')!r}")
check(unq(blocks["variable"].get("profile", {}).get("default")) == "course", "variable profile must default to \"course\"")
primary = res.get(("exoscale_compute_instance", "redis_primary"), {})
check(primary.get("count") == "${local.redis ? 1 : 0}" and primary.get("zone") == "${local.primary_zone}"
      and primary.get("template_id") == '${data.exoscale_template.redis["primary"].id}'
      and primary.get("security_group_ids") == ["${exoscale_security_group.redis_primary[0].id}"],
      f"the Redis primary: one fixed instance in the zone, only with redis, in its own group: {primary}")
kvpool = res.get(("exoscale_instance_pool", "kv"), {})
kv_locals = next((l for l in blocks["locals"] if "kv_pools" in l), {})
check(kvpool.get("for_each") == "${local.kv_pools}" and kvpool.get("zone") == "${local.primary_zone}"
      and kvpool.get("security_group_ids") == ["${exoscale_security_group.kv[each.key].id}"]
      and kvpool.get("user_data") == '${each.key == "api" ? module.userdata.kv : module.userdata.replica}'
      and kvpool.get("template_id") == "${data.exoscale_template.redis[each.value.template].id}",
      f"the redis pools: one per entry of local.kv_pools, each in its group, with its user-data and template: {kvpool}")
check(re.fullmatch(r'\$\{local\.redis \? \{replicas = \{[^{}]*template = "replica"\}, api = \{[^{}]*template = "kv"\}\} : \{\}\}', str(kv_locals.get("kv_pools", ""))) is not None,
      f"local.kv_pools: replicas (the replica template) and api (the kv template), only with redis: {kv_locals.get('kv_pools')!r}")
check(res.get(("exoscale_nlb", "kv"), {}).get("for_each") == '${local.redis ? toset(["api", "replicas"]) : toset([])}',
      "the redis NLBs: the API's and the replicas', only with redis")
kv_services = next((l["kv_services"] for l in blocks["locals"] if "kv_services" in l), "")
svc = res.get(("exoscale_nlb_service", "kv"), {})
check(svc.get("for_each") == "${local.kv_services}" and svc.get("nlb_id") == "${exoscale_nlb.kv[each.key].id}"
      and svc.get("instance_pool_id") == "${exoscale_instance_pool.kv[each.key].id}"
      and (svc.get("port"), svc.get("target_port")) == ("${each.value.port}", "${each.value.target_port}")
      and unq(svc.get("protocol")) == "tcp",
      f"the redis NLB services: one per entry of local.kv_services, on that entry's NLB and pool: {svc}")
for key, port, target in [("api", 80, 8080), ("replicas", 6379, 6379)]:
    check(re.search(key + r' = \{name = "[a-z]+", port = ' + str(port) + ", target_port = " + str(target) + ",", str(kv_services)) is not None,
          f"local.kv_services: {key} forwards {port} -> {target}, only with redis: {kv_services!r}")
check(str(kv_services).startswith("${local.redis ? {") and str(kv_services).endswith("} : {}}"),
      f"local.kv_services only with redis: {kv_services!r}")
hc = svc.get("healthcheck", [{}])
hc = hc[0] if isinstance(hc, list) else hc
# Both health checks ask HTTP /health on 8080: the kv member, or the replica's sidecar (in sync
# and not drained), never Redis itself.
check(unq(hc.get("mode")) == "http" and hc.get("port") == 8080 and unq(hc.get("uri")) == "/health",
      f"the redis NLB services: the health check must be HTTP /health on 8080: {hc}")
tmpl_names = next((l["template_names"] for l in blocks["locals"] if "template_names" in l), "")
check(tmpl_names == '${{for role, i in local.images : role => "${var.name_prefix}-${role == "monitor" && local.redis ? "kv-monitor" : role}-${substr(i.digest, 0, 12)}"}}',
      f"template names: the course's as ever, the kv monitor's its own (same sources, another image): {tmpl_names!r}")
check(datas.get(("exoscale_template", "redis"), {}).get("for_each") == '${toset(local.redis ? ["primary", "replica", "kv"] : [])}',
      "the redis templates (primary, replica, kv) are read only with redis")

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
check(re.search(r'"front-ssh-\$\{c\}" => \{group = "front", port = 22, cidr = c, what = "SSH"\} if local.front && c != "0.0.0.0/0"', str(admin)) is not None,
      "the front's SSH must never be opened to the whole world (admin_cidrs other than 0.0.0.0/0 only)")
sec_locals = next((l for l in blocks["locals"] if "monitor_cidr" in l), {})
monitor_cidr = unq(sec_locals.get("monitor_cidr", ""))
check(monitor_cidr == "${exoscale_compute_instance.monitor.public_ip_address}/32", f"local.monitor_cidr must be the monitor's address: {monitor_cidr!r}")
app_sources = str(sec_locals.get("app_sources", ""))
check(app_sources.startswith("${local.front ? {front = {cidr = \"${exoscale_compute_instance.front[0].public_ip_address}/32\"")
      and "monitor = {cidr = local.monitor_cidr" in app_sources and app_sources.endswith(": {}}"),
      f"with the front, the app port admits the front's and the monitor's addresses only: {app_sources}")
# Every rule, by what it opens: (ports, source, group, count) exactly.
expected_rules = {
    "pool_app": ((8080, 8080), "0.0.0.0/0", "pool", "${local.front || local.redis ? 0 : 1}"),
    "pool_app_from": ((8080, 8080), "${each.value.cidr}", "pool", None),
    "pool_app_healthcheck": ((8080, 8080), "public:public-nlb-healthcheck-sources", "pool", "${local.front ? 1 : 0}"),
    "pool_node_exporter": ((9100, 9100), "${local.monitor_cidr}", "pool", None),
    "front_http": ((80, 80), "0.0.0.0/0", "front", "${local.front ? 1 : 0}"),
}
rules = {name: r for (t, name), r in blocks["resource"].items() if t == "exoscale_security_group_rule"}
check(set(rules) == set(expected_rules) | {"admin", "kv"}, f"security group rules: {sorted(rules)}")
check(rules.get("pool_app_from", {}).get("for_each") == "${local.app_sources}", "pool_app_from must iterate local.app_sources")
for name, r in rules.items():
    check(unq(r.get("type", "")).upper() == "INGRESS", f"rule {name}: only ingress rules are expected")
    if name == "kv":
        continue  # profile = "redis", one zone: checked in 1b.
    check("user_security_group_id" not in r, f"rule {name}: sources are addresses (a group may not match another zone's traffic)")
    cidr = unq(r.get("cidr", ""))
    if name == "admin":
        check("each.value.cidr" in str(cidr), "the admin rules must take their CIDR from admin_cidrs")
        continue
    if name not in expected_rules:
        continue
    ports, source, group, count = expected_rules[name]
    got_source = f"public:{unq(r['public_security_group'])}" if "public_security_group" in r else cidr
    check((int(r.get("start_port")), int(r.get("end_port"))) == ports and got_source == source,
          f"rule {name}: opens {r.get('start_port')}-{r.get('end_port')} to {got_source}, expected {ports} to {source}")
    want_group = f"${{exoscale_security_group.{group}.id}}" if group != "front" else "${exoscale_security_group.front[0].id}"
    check(r.get("security_group_id") == want_group, f"rule {name}: in the {group} group, found {r.get('security_group_id')}")
    check(r.get("count") == count, f"rule {name}: count = {r.get('count')!r}, expected {count!r}")
    if source == "0.0.0.0/0":
        check(ports in [(8080, 8080), (80, 80)], f"rule {name}: only the app port (without the front) and 80 (on the front) are opened to the world")

# The redis profile's rules (local.kv_rules, one resource): exactly these, by what they open.
# Only the API members' 8080 is open to the world (the API NLB's port 80 reaches it); Redis
# (6379) only from the groups that need it; the exporters and the sidecar from the monitor.
kv_rules_text = str(next((l["kv_rules"] for l in blocks["locals"] if "kv_rules" in l), ""))
got_kv = {m[0]: (m[1], int(m[2]), unq(m[3]), unq(m[4]), unq(m[5])) for m in re.findall(
    r'"([a-z-]+)" = \{group = "(\w+)", port = (\d+), cidr = ([^,]+), from = ([^,]+), public = ([^,]+), what = ', kv_rules_text)}
M = "local.monitor_cidr"
expected_kv = {
    "primary-redis-replicas": ("primary", 6379, "null", "replicas", "null"),
    "primary-redis-api": ("primary", 6379, "null", "api", "null"),
    "primary-node-exporter": ("primary", 9100, M, "null", "null"),
    "primary-redis-exporter": ("primary", 9121, M, "null", "null"),
    "replicas-redis-api": ("replicas", 6379, "null", "api", "null"),
    "replicas-sidecar-check": ("replicas", 8080, "null", "null", "public-nlb-healthcheck-sources"),
    "replicas-sidecar-monitor": ("replicas", 8080, M, "null", "null"),
    "replicas-node-exporter": ("replicas", 9100, M, "null", "null"),
    "replicas-redis-exporter": ("replicas", 9121, M, "null", "null"),
    "api-http": ("api", 8080, "0.0.0.0/0", "null", "null"),
    "api-node-exporter": ("api", 9100, M, "null", "null"),
}
check(kv_rules_text.startswith("${local.redis ? {") and kv_rules_text.endswith(": {}}"), "local.kv_rules: only with redis")
check(got_kv == expected_kv, f"local.kv_rules differ: {sorted(set(got_kv.items()) ^ set(expected_kv.items()))}")
world = [n for n, r in got_kv.items() if r[2] == "0.0.0.0/0"]
check(world == ["api-http"], f"redis: only the API members' 8080 (behind the NLB's 80) is open to the world: {world}")
for n, (g, port, cidr, frm, pub) in got_kv.items():
    check(sum(x != "null" for x in (cidr, frm, pub)) == 1, f"kv rule {n}: exactly one source")
    check(port != 6379 or frm in ("replicas", "api"), f"kv rule {n}: Redis only from the replicas' or the API members' group")
kv_rule = rules.get("kv", {})
check(kv_rule.get("for_each") == "${local.kv_rules}" and kv_rule.get("security_group_id") == "${local.kv_groups[each.value.group]}"
      and kv_rule.get("user_security_group_id") == "${each.value.from == null ? null : local.kv_groups[each.value.from]}"
      and kv_rule.get("cidr") == "${each.value.cidr}" and kv_rule.get("public_security_group") == "${each.value.public}"
      and kv_rule.get("start_port") == "${each.value.port}" and kv_rule.get("end_port") == "${each.value.port}",
      f"the kv rule resource must open exactly what local.kv_rules says: {kv_rule}")
check(re.search(r'"\$\{g\}-ssh-\$\{c\}" => \{group = g, port = 22, cidr = c, what = "SSH"\}', str(admin)) is not None,
      "redis: SSH from admin_cidrs on the primary, the replicas and the API members (port 22 only)")

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
    check(str(rules[0].get("expression")).startswith('"${module.layout.iam_zones} && operation in ['),
          f"role {name}: the allow rule must be scoped to the deployment's zones (module.layout.iam_zones)")
    check(unq(rules[-1].get("expression")) == "true", f"role {name}: the last rule must deny everything else")
    if name == "templates":
        _, sos = rules_of(role, "sos")
        check([unq(x.get("action")) for x in sos] == ["allow", "deny"] and unq(sos[0].get("expression")) == "parameters.bucket in [${local.quoted_buckets}]",
              f"role templates: object storage must be allowed on the image buckets only: {sos}")
iam_locals = next((l for l in blocks["locals"] if "quoted_buckets" in l), {})
check(iam_locals.get("quoted_buckets") == "${join(\", \", [for b in values(module.layout.buckets) : \"'${b}'\"])}",
      f"local.quoted_buckets must list the layout's buckets: {iam_locals.get('quoted_buckets')!r}")

# And the poolpilot client's operation names agree with the Rust source.
src = open(os.path.join(os.path.dirname(__file__), "..", "src", "exoscale", "metrics.rs")).read()
called = set(re.findall(r'=> "([a-z-]+)"', src)) - {"other"}
# Called by the admin commands (pool status, template push/delete), not by the daemons;
# get-instance only by the client's own tests.
admin_only = {"list-zones", "list-instance-pools", "list-instance-types", "get-instance"} | template_used - used
check(called - admin_only == used, f"src/exoscale/metrics.rs operations minus admin ones: {sorted(called - admin_only)}")

# 6. Terraform itself: the layout for one zone and for two, the zones variable's validation,
# the formatting. The root module needs the Exoscale provider, which cannot be loaded offline;
# the layout module and variables.tf need none.
ZONES = ["ch-gva-2", "ch-dk-2", "de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1", "hr-zag-1"]
TF_ENV = dict(os.environ, TF_IN_AUTOMATION="1", TF_CLI_CONFIG_FILE="/dev/null")


def terraform_in(files, *cmds):
    """Runs `terraform init` then each command in a temporary root holding `files`; returns
    the last command's CompletedProcess."""
    root = tempfile.mkdtemp(prefix="terraform-test-")
    try:
        for name, text in files.items():
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        r = None
        for cmd in (["init", "-input=false", "-no-color"],) + cmds:
            r = subprocess.run(["terraform", f"-chdir={root}", *cmd], capture_output=True, text=True, env=TF_ENV)
            if r.returncode != 0:
                return r
        return r
    finally:
        shutil.rmtree(root, ignore_errors=True)


def layout(zones, front=None, profile=None, expect_error=None):
    main = f"""
module "l" {{
  source          = {json.dumps(os.path.abspath(os.path.join(DIR, "layout")))}
  zones           = {json.dumps(zones)}
  front           = {json.dumps(front)}
  {"" if profile is None else f"profile = {json.dumps(profile)}"}
  name_prefix     = "poolpilot"
  template_bucket = "poolpilot-templates-0a1b2c3d"
}}
output "l" {{ value = module.l }}
"""
    r = terraform_in({"main.tf": main}, ["apply", "-auto-approve", "-input=false", "-no-color"], ["output", "-json"])
    if expect_error is not None:
        check(r.returncode != 0 and expect_error in " ".join(r.stderr.split()),
              f"layout {zones} front={front} profile={profile}: must be refused with {expect_error!r}: {r.stderr[-800:]}")
        return None
    if r.returncode != 0:
        check(False, f"layout {zones}: terraform failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")
        return None
    return json.loads(r.stdout)["l"]["value"]


def zones_accepted(zones, **more):
    """Whether variables.tf's validation accepts zones = ZONES (a plan of variables.tf alone)."""
    with open(os.path.join(DIR, "variables.tf")) as f:
        variables = f.read()
    tfvars = json.dumps(dict({"exoscale_key": "EXO0", "exoscale_secret": "s", "zones": zones}, **more))
    r = terraform_in({"variables.tf": variables, "t.auto.tfvars.json": tfvars},
                     ["plan", "-input=false", "-no-color", "-lock=false"])
    if r.returncode != 0 and "Invalid value for variable" not in r.stderr:
        check(False, f"zones = {zones}: terraform failed for another reason: {r.stderr[-1500:]}")
    return r.returncode == 0


if shutil.which("terraform") is None:
    print("terraform: SKIPPED the checks that run Terraform (not installed): layout, zones validation, fmt")
else:
    one, two = layout(["ch-gva-2"]), layout(["de-fra-1", "ch-gva-2"])
    one_front, two_plain = layout(["ch-gva-2"], front=True), layout(["de-fra-1", "ch-gva-2"], front=False)
    if one and two and one_front and two_plain:
        check(one["front"] is False and two["front"] is True and one_front["front"] is True and two_plain["front"] is False,
              f"the front: default off with one zone, on with two, forced either way: {[x['front'] for x in (one, two, one_front, two_plain)]}")
        check(set(one["templates"]) == {"pool/ch-gva-2", "monitor/ch-gva-2"}, f"one zone: templates {sorted(one['templates'])}")
        check(set(two["templates"]) == {"pool/de-fra-1", "pool/ch-gva-2", "monitor/de-fra-1", "front/de-fra-1"},
              f"two zones: the pool's template in each, the monitor's and the front's in the first: {sorted(two['templates'])}")
        check(set(one_front["templates"]) == {"pool/ch-gva-2", "monitor/ch-gva-2", "front/ch-gva-2"}, f"one zone with the front: {sorted(one_front['templates'])}")
        check(set(two_plain["templates"]) == {"pool/de-fra-1", "pool/ch-gva-2", "monitor/de-fra-1"}, f"two zones without the front: {sorted(two_plain['templates'])}")
        for lay in (one, two, one_front, two_plain):
            for key, t in lay["templates"].items():
                check(key == f"{t['role']}/{t['zone']}", f"template {key}: {t}")
        check(two["primary"] == "de-fra-1" and two["zones"] == ["de-fra-1", "ch-gva-2"], f"the first zone given is the primary: {two['primary']}")
        check(one["buckets"] == {"ch-gva-2": "poolpilot-templates-0a1b2c3d"}, f"one zone keeps its bucket's name: {one['buckets']}")
        check(two["buckets"] == {"de-fra-1": "poolpilot-templates-0a1b2c3d", "ch-gva-2": "poolpilot-templates-0a1b2c3d-ch-gva-2"},
              f"two zones: a bucket each (names are global), the first as before: {two['buckets']}")
        check(one["iam_zones"] == "zone in ['ch-gva-2']" and two["iam_zones"] == "zone in ['de-fra-1', 'ch-gva-2']",
              f"the IAM zone condition lists exactly the zones: {one['iam_zones']!r}, {two['iam_zones']!r}")
    check(zones_accepted(None) and zones_accepted(["ch-gva-2"]) and zones_accepted(["ch-gva-2", "de-fra-1"]) and zones_accepted(ZONES),
          "zones: null, one, two and all eight zones must be accepted")
    for bad in ([], ["ch-gva-2", "ch-gva-2"], ["ch-gva-3"], ["ch-gva-2", "us-east-1"]):
        check(not zones_accepted(bad), f"zones = {bad} must be refused")
    # profile: course (the default, null = unset here) and redis accepted, anything else refused.
    check(zones_accepted(None, profile="course") and zones_accepted(None, profile="redis"), "profile course and redis must be accepted")
    check(not zones_accepted(None, profile="Redis") and not zones_accepted(None, profile=""), "an unknown profile must be refused")
    # The layout with profile = "redis": its four templates in its one zone, no pool and no front
    # template; the course's layout unchanged with profile = "course" given explicitly; two zones
    # or the front refused with a message saying why.
    red = layout(["de-fra-1"], profile="redis")
    course_explicit = layout(["de-fra-1", "ch-gva-2"], profile="course")
    if red and course_explicit and two:
        check(set(red["templates"]) == {"monitor/de-fra-1", "primary/de-fra-1", "replica/de-fra-1", "kv/de-fra-1"} and red["front"] is False
              and red["profile"] == "redis", f"redis: the monitor's, primary's, replicas' and API's templates in its zone: {sorted(red['templates'])}")
        check(red["buckets"] == {"de-fra-1": "poolpilot-templates-0a1b2c3d"}, f"redis: one bucket: {red['buckets']}")
        check(course_explicit == two, "profile = \"course\" given explicitly must lay out exactly what the default does")
    layout(["de-fra-1", "ch-gva-2"], profile="redis", expect_error="profile = \"redis\" runs in one zone without the front")
    layout(["de-fra-1"], front=True, profile="redis", expect_error="profile = \"redis\" runs in one zone without the front")
    # The cost output, evaluated by Terraform: outputs.tf's price locals and hourly_cost_eur
    # with variables.tf and the layout module (the machines themselves need the provider).
    outputs_tf = open(os.path.join(DIR, "outputs.tf")).read()
    cost_tf = (outputs_tf[:outputs_tf.index('output "nlb_address"')] + outputs_tf[outputs_tf.index('output "hourly_cost_eur"'):]
               + f"""
module "layout" {{
  source          = {json.dumps(os.path.abspath(os.path.join(DIR, "layout")))}
  zones           = var.zones == null ? [var.zone] : var.zones
  front           = var.front
  profile         = var.profile
  name_prefix     = var.name_prefix
  template_bucket = "poolpilot-templates-0a1b2c3d"
}}
locals {{
  zones = module.layout.zones
  front = module.layout.front
  redis = module.layout.profile == "redis"
}}
""")

    def cost(**tfvars):
        r = terraform_in({"variables.tf": open(os.path.join(DIR, "variables.tf")).read(), "cost.tf": cost_tf,
                          "t.auto.tfvars.json": json.dumps(dict(exoscale_key="EXO0", exoscale_secret="s", **tfvars))},
                         ["apply", "-auto-approve", "-input=false", "-no-color"], ["output", "-json"])
        check(r.returncode == 0, f"cost {tfvars}: terraform failed: {r.stderr[-1500:]}")
        return json.loads(r.stdout)["hourly_cost_eur"]["value"] if r.returncode == 0 else {}

    # The README's figures: one zone (monitor, NLB, 2 templates, disks) and two zones with the
    # front (another NLB, the front, its disk and Elastic IP, 4 templates), 1 and 4 members a zone.
    for tfvars, initial, at_max in [({}, 0.07374, 0.09981), ({"zones": ["ch-gva-2", "de-fra-1"]}, 0.14567, 0.19781)]:
        c = cost(**tfvars)
        got = (round(c.get("at_initial_size") or 0, 5), round(c.get("at_max_size") or 0, 5))
        check(got == (initial, at_max), f"hourly_cost_eur {tfvars}: {got}, README says {(initial, at_max)}")
    # profile = "redis" (README): the monitor and the primary (standard.small each, with their
    # disks), two NLBs, 4 templates; two pools (replicas, API) of standard.micro at 1 and at 4.
    fixed = 0.02333 + 2 * 0.03472 + 10 * 0.00014 + 0.02333 + 10 * 0.00014 + 4 * 10 * 0.00028
    member = 0.00729 + 10 * 0.00014
    c = cost(profile="redis")
    got = (round(c.get("at_initial_size") or 0, 5), round(c.get("at_max_size") or 0, 5))
    check(got == (round(fixed + 2 * member, 5), round(fixed + 8 * member, 5)) == (0.14748, 0.19962),
          f"hourly_cost_eur redis: {got}, expected {(round(fixed + 2 * member, 5), round(fixed + 8 * member, 5))} (README: 0.14748, 0.19962)")
    c = cost(profile="redis", redis_instance_type="standard.huge")
    check(c.get("at_initial_size") is None and "unknown price for standard.huge" in c.get("note", ""),
          f"an unknown primary type must give a null cost with a note: {c}")
    c = cost(zones=["ch-gva-2", "de-fra-1"], front_instance_type="standard.huge")
    check(c.get("at_initial_size") is None and "unknown price for standard.huge" in c.get("note", ""),
          f"an unknown front type must give a null cost with a note: {c}")
    r = subprocess.run(["terraform", "fmt", "-check", "-recursive", DIR], capture_output=True, text=True, env=TF_ENV)
    check(r.returncode == 0, f"terraform fmt -check -recursive: {r.stdout}{r.stderr}")

# 7. Every .nix file parses.
REPO = os.path.abspath(os.path.join(DIR, ".."))
if shutil.which("nix-instantiate") is None:
    print("terraform: SKIPPED nix-instantiate --parse (nix-bin not installed)")
else:
    nix_files = [os.path.join(d, f) for d, dirs, fs in os.walk(REPO) for f in fs
                 if f.endswith(".nix") and not {"target", ".git"} & set(os.path.relpath(d, REPO).split(os.sep))]
    check(os.path.join(REPO, "nixos-modules", "front.nix") in nix_files, "nixos-modules/front.nix is missing")
    for f in nix_files:
        r = subprocess.run(["nix-instantiate", "--parse", f], capture_output=True, text=True)
        check(r.returncode == 0, f"{os.path.relpath(f, REPO)} does not parse: {r.stderr.strip()[-500:]}")
    flake = open(os.path.join(REPO, "flake.nix")).read()
    check('front-image = image "front";' in flake and 'front = mkSystem "front";' in flake,
          "flake.nix must build the front's image (packages.front-image from nixosConfigurations.front)")
    # Every image templates.tf builds with image_source = "nix" is a flake output, from a
    # nixosConfiguration of its role, and images/<role>.nix builds it without the flake.
    attrs = dict(re.findall(r'^\s*(\w+)\s*=\s*(?:local\.redis \? "kv-monitor-image" : )?"([a-z-]+-image)"', open(os.path.join(DIR, "templates.tf")).read(), re.M))
    check(set(attrs) == {"pool", "monitor", "front", "primary", "replica", "kv"}, f"templates.tf image_attrs: {attrs}")
    for attr in set(attrs.values()) | {"kv-monitor-image"}:
        role = attr[:-len("-image")]
        check(f'{attr} = image "{role}";' in flake and f'{role} = mkSystem "{role}";' in flake,
              f"flake.nix must build {attr} from nixosConfigurations.{role}")
        check(os.path.exists(os.path.join(REPO, "images", f"{role}.nix")), f"images/{role}.nix is missing")
    # The kv monitor's per-pool tables are named as the user-data names the pools.
    kv_monitor = open(os.path.join(REPO, "nixos-modules", "kv-monitor.nix")).read()
    check(re.search(r"replicas = \{ policy = \.\./examples/policies/kv-replicas\.toml; drainPort = 8080; \};", kv_monitor)
          and re.search(r"api = \{ policy = \.\./examples/policies/kv-api\.toml; drainPort = 8080; \};", kv_monitor)
          and '"replicas=${var.zone}:${var.kv_pools.replicas},api=${var.zone}:${var.kv_pools.api}"' in open(os.path.join(DIR, "userdata", "main.tf")).read(),
          "the kv monitor's pools (replicas, api) must be the names EXOSCALE_INSTANCEPOOL_ID gives them")
    # Its Prometheus configuration, as Nix builds it, passes promtool (rules from the repository).
    if shutil.which("promtool"):
        for am in ("false", "true"):
            r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr",
                                f"import {os.path.join(REPO, 'nixos-modules', 'kv-prometheus.nix')} {{ alertmanager = {am}; }}"],
                               capture_output=True, text=True)
            check(r.returncode == 0, f"kv-prometheus.nix does not evaluate: {r.stderr[-500:]}")
            if r.returncode == 0:
                text = json.loads(r.stdout).replace("/etc/poolpilot/prometheus/rules.yml", os.path.join(REPO, "monitoring", "prometheus", "rules.yml"))
                check("job_name: redis" in text and "/etc/poolpilot/redis-primary.json" in text and ("alerting:" in text) == (am == "true"),
                      "kv-prometheus.nix: the redis job, the primary's targets, alerting only with Alertmanager")
                with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
                    f.write(text)
                r = subprocess.run(["promtool", "check", "config", f.name], capture_output=True, text=True)
                os.unlink(f.name)
                check(r.returncode == 0, f"kv-prometheus.nix (alertmanager = {am}): promtool: {r.stdout}{r.stderr}")
    else:
        print("terraform: SKIPPED promtool on kv-prometheus.nix (promtool not installed)")

if failures:
    for f in failures:
        print(f"terraform: FAIL: {f}")
    sys.exit(1)
print(f"terraform: ok: {len(blocks['resource'])} resources, {len(blocks['variable'])} variables, "
      f"{len(blocks['output'])} outputs checked")
