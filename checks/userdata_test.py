#!/usr/bin/env python3
"""The user-data of every machine, rendered by Terraform itself and read as the machines read it.

terraform/userdata is a module without providers, so Terraform renders it offline (its own
templatefile and jsonencode). With tokens and passwords holding `: `, `#`, both quotes, a
backtick, `<>&` and non-ASCII letters, this checks that:

- each cloud-config parses with PyYAML's safe_load (cloud-init's parser) and has exactly the
  expected write_files, each file root-only and holding exactly its value;
- each environment file, read with POSIX shell double-quote rules (systemd's EnvironmentFile
  takes the same escapes inside double quotes), yields exactly the values;
- the discovery agent's file holds no token and no Prometheus password, the autoscaler's no API
  key;
- zones: with one pool in the monitor's zone EXOSCALE_INSTANCEPOOL_ID is its id alone (as
  ever); with two it is ZONE:ID,ZONE:ID;
- the front's user-data (with the front only) yields exactly its backends and Elastic IP; the
  front unit's wrapper (nixos-modules/poolpilot.nix) turns those backends into exactly one
  --backend flag each, and the module (evaluated by Nix with a minimal lib) runs the front
  through it only with backendsFromEnvironment, and refuses a front with no backends at all; the
  kv and replica units run units.json's command lines, the kv unit with its environment file
  required, the sidecar's optional, and their [kv]/[replica] keys are settings.json's; front.nix's Elastic IP unit, run as systemd would (its ${VAR} expanded
  from that file) in a network namespace of its own, puts the address on lo, where a listener
  on 0.0.0.0 answers it;
- each pool is wired to the module as the root module wires the instance pools (the pool holds
  its members' user-data, the monitor's holds the pool ids), so a member's user-data that
  depended on the pool ids fails here as a dependency cycle, as it would fail `terraform plan`;
- profile = "redis": a replica's env file yields exactly the primary's address and the drain
  token, an API member's exactly REDIS_URL (the primary), REDIS_REPLICAS_URL (the replicas'
  NLB) and the drain token, neither holds the API secret or another token; the monitor's names
  its two pools replicas=ZONE:ID,api=ZONE:ID and carries the primary's exporters as file_sd
  targets (node 9100, redis 9121), readable by Prometheus;
- the Redis roles (nixos-modules/redis-primary.nix, redis-replica.nix, evaluated by Nix with a
  minimal lib): the replica's oneshot turns the replica env file into one `replicaof` line and
  refuses anything but an IPv4 address; a real primary and a real replica started with the
  modules' settings replicate a write, the primary keeps an AOF, and the replica refuses reads
  (MASTERDOWN) once its primary stops; the kv monitor's Prometheus configuration
  (nixos-modules/kv-prometheus.nix), run by a real Prometheus on the primary's file_sd file
  from the user-data and a discovery file, scrapes the replicas' and the primary's Redis
  exporters and not the API members' (nothing listens there), and node_exporter everywhere;
- Prometheus' web config passes `promtool check web-config`, and a real Prometheus started with
  it answers 401 without the password, 401 with a wrong one, and 200 with the right one; with
  prometheus_auth = false (no hash) it answers without one.

Usage: checks/userdata_test.py [terraform/]   Needs: terraform, python3-yaml, prometheus, promtool,
redis-server and redis-cli (Debian's redis-server), nix-instantiate
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import base64

import yaml

TF_DIR = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "terraform"))
MODULE = os.path.join(TF_DIR, "userdata")

if shutil.which("terraform") is None:
    print("userdata: SKIPPED: terraform is not installed, so the user-data cannot be rendered "
          "by Terraform here (the other checks still ran)")
    sys.exit(0)

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


HARD = "a: b #c \"dq\" 'sq' `bt` <&> ünï"
POOL_IDS = {"ch-gva-2": "9a6a2f25-8b5a-4f2b-9d3e-2d2f0b6c1e01", "de-fra-1": "0d7c51e2-4f3a-4c1b-8e2d-6a5b4c3d2e1f"}
NLBS = {"ch-gva-2": "198.51.100.10", "de-fra-1": "198.51.100.20"}
EIP = "203.0.113.7"
KV_POOLS = {"replicas": "3e1d2c4b-5a69-4b7c-8d9e-0f1a2b3c4d5e", "api": "7f6e5d4c-3b2a-4190-8877-665544332211"}
KV = {"primary": "198.51.100.30", "replicas": "198.51.100.31"}
# Readable by other users: not a secret (Prometheus reads it as its own user).
PUBLIC_FILES = {"/etc/poolpilot/redis-primary.json"}
VALUES = {
    "zone": "ch-gva-2",
    "api_key": "EXO0123456789abcdef",
    "api_secret": "secret: #" + HARD,
    "webhook_token": "#" + HARD,
    "drain_token": "drain: " + HARD,
    "pool_min": 2,
    "pool_max": 7,
    "drain_wait_seconds": 25,
    "grafana_admin_password": "'" + HARD,
    "grafana_secret_key": "\"" + HARD,
    "prometheus_password": "prom " + HARD.replace("`", ""),
}


def render(auth, zones=("ch-gva-2",), front=False, kv=False):
    """Renders the module with Terraform (the pools of `zones`, the front or not; or, with kv,
    profile = "redis"'s two pools); returns {output name: text or None}. Each pool is a
    terraform_data holding its id and the user-data its members get, wired as the root module
    wires the instance pools: a member's user-data that depended on the pool ids would be a
    dependency cycle, which Terraform refuses here."""
    root = tempfile.mkdtemp(prefix="userdata-tf-")
    try:
        hash_expr = "bcrypt(var.v.prometheus_password, 6)" if auth else "null"
        values = dict(VALUES, pools={} if kv else {z: POOL_IDS[z] for z in zones},
                      front_backends={z: NLBS[z] for z in zones} if front else {},
                      elastic_ip=EIP if front else None,
                      kv_pools=KV_POOLS if kv else {},
                      kv=KV if kv else None)
        with open(os.path.join(root, "main.tf"), "w") as f:
            f.write(f'''
variable "v" {{ type = any }}
resource "terraform_data" "pool" {{
  for_each = var.v.pools
  input    = {{ id = each.value, user_data = module.u.pool }}
}}
resource "terraform_data" "kv" {{
  for_each = var.v.kv_pools
  input    = {{ id = each.value, user_data = each.key == "api" ? module.u.kv : module.u.replica }}
}}
module "u" {{
  source = {json.dumps(MODULE)}
  zone = var.v.zone
  pools = {{ for z, p in terraform_data.pool : z => p.output.id }}
  kv = var.v.kv
  kv_pools = length(var.v.kv_pools) == 0 ? null : {{ replicas = try(terraform_data.kv["replicas"].output.id, null), api = try(terraform_data.kv["api"].output.id, null) }}
  front_backends = var.v.front_backends
  elastic_ip = var.v.elastic_ip
  api_key = var.v.api_key
  api_secret = var.v.api_secret
  webhook_token = var.v.webhook_token
  drain_token = var.v.drain_token
  pool_min = var.v.pool_min
  pool_max = var.v.pool_max
  drain_wait_seconds = var.v.drain_wait_seconds
  grafana_admin_password = var.v.grafana_admin_password
  grafana_secret_key = var.v.grafana_secret_key
  prometheus_password = var.v.prometheus_password
  prometheus_password_hash = {hash_expr}
}}
output "monitor" {{
  value     = module.u.monitor
  sensitive = true
}}
output "pool" {{
  value     = module.u.pool
  sensitive = true
}}
output "front" {{
  value = module.u.front
}}
output "replica" {{
  value     = module.u.replica
  sensitive = true
}}
output "kv" {{
  value     = module.u.kv
  sensitive = true
}}
''')
        with open(os.path.join(root, "v.auto.tfvars.json"), "w") as f:
            json.dump({"v": values}, f, ensure_ascii=False)
        env = dict(os.environ, TF_IN_AUTOMATION="1", TF_CLI_CONFIG_FILE="/dev/null")
        for cmd in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
            r = subprocess.run(["terraform", f"-chdir={root}", *cmd], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                sys.exit(f"userdata: terraform {cmd[0]} failed:\n{r.stdout}{r.stderr}")
        r = subprocess.run(["terraform", f"-chdir={root}", "output", "-json"], capture_output=True, text=True,
                           env=env, check=True)
        return {k: v["value"] for k, v in json.loads(r.stdout).items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def files_of(cloud_config, which):
    check(cloud_config.startswith("#cloud-config\n"), f"{which}: must start with #cloud-config")
    doc = yaml.safe_load(cloud_config)
    check(isinstance(doc, dict) and set(doc) == {"write_files"}, f"{which}: only write_files expected, got {doc!r:.200}")
    out = {}
    for f in doc["write_files"]:
        mode = "0644" if f.get("path") in PUBLIC_FILES else "0600"
        check(f.get("owner") == "root:root" and f.get("permissions") == mode, f"{which}: {f['path']} must be root's, {mode}")
        check(isinstance(f.get("content"), str), f"{which}: {f['path']}: content must be a string, got {f.get('content')!r}")
        out[f["path"]] = f["content"]
    return out


def read_env(text):
    """Reads an environment file as `set -a; . file` does in a POSIX shell."""
    with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run(["env", "-i", "sh", "-c", 'set -a; . "$1"; env -0', "sh", f.name],
                           capture_output=True, check=True)
    finally:
        os.unlink(f.name)
    pairs = [p.split(b"=", 1) for p in r.stdout.split(b"\0") if p]
    return {k.decode(): v.decode() for k, v in pairs if k not in (b"PWD", b"SHLVL", b"_", b"OLDPWD")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url, auth=None):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def prometheus_answers(web_config, attempts):
    """Starts a real Prometheus with this web config; returns the status of each attempt."""
    d = tempfile.mkdtemp(prefix="userdata-prom-")
    try:
        web = os.path.join(d, "web.yml")
        with open(web, "w") as f:
            f.write(web_config)
        r = subprocess.run(["promtool", "check", "web-config", web], capture_output=True, text=True)
        check(r.returncode == 0, f"promtool check web-config: {r.stdout}{r.stderr}")
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 15s\n")
        port = free_port()
        p = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                              f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}/api/v1/query?query=1"
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if p.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"userdata: Prometheus did not start: {p.stderr.read().decode()[-2000:]}")
                    time.sleep(0.2)
            return [status(url, a) for a in attempts]
        finally:
            p.terminate()
            p.wait(timeout=30)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- with Prometheus' authentication (the default) ---
out = render(auth=True)
mon = files_of(out["monitor"], "monitor")
pool = files_of(out["pool"], "pool")

check(set(pool) == {"/etc/poolpilot/env"}, f"pool: files {sorted(pool)}")
check(read_env(pool["/etc/poolpilot/env"]) == {"POOLPILOT_DRAIN_TOKEN": VALUES["drain_token"]},
      f"pool: env file yields {read_env(pool['/etc/poolpilot/env'])!r}")

expected_files = {"/etc/poolpilot/env", "/etc/poolpilot/autoscaler.env", "/etc/poolpilot/webhook-token",
                  "/etc/poolpilot/grafana-secret-key", "/etc/poolpilot/grafana-admin-password",
                  "/etc/poolpilot/prometheus-password", "/etc/poolpilot/prometheus-web.yml"}
check(set(mon) == expected_files, f"monitor: files {sorted(mon)}")
api = read_env(mon["/etc/poolpilot/env"])
check(api == {"EXOSCALE_ZONE": VALUES["zone"], "EXOSCALE_INSTANCEPOOL_ID": POOL_IDS["ch-gva-2"],
              "EXOSCALE_API_KEY": VALUES["api_key"], "EXOSCALE_API_SECRET": VALUES["api_secret"]},
      f"monitor: the discovery agent's env file yields {api!r}")
auto = read_env(mon["/etc/poolpilot/autoscaler.env"])
check(auto == {"POOLPILOT_WEBHOOK_TOKEN": VALUES["webhook_token"], "POOLPILOT_DRAIN_TOKEN": VALUES["drain_token"],
               "POOLPILOT_MIN": "2", "POOLPILOT_MAX": "7", "POOLPILOT_DRAIN_WAIT": "25s",
               "POOLPILOT_PROMETHEUS_PASSWORD": VALUES["prometheus_password"]},
      f"monitor: the autoscaler's env file yields {auto!r}")
for path, key in [("/etc/poolpilot/webhook-token", "webhook_token"), ("/etc/poolpilot/grafana-secret-key", "grafana_secret_key"),
                  ("/etc/poolpilot/grafana-admin-password", "grafana_admin_password"),
                  ("/etc/poolpilot/prometheus-password", "prometheus_password")]:
    check(mon[path] == VALUES[key], f"monitor: {path} holds {mon[path]!r}, not {VALUES[key]!r}")

check(out.get("front") is None, f"without the front there is no front user-data: {out.get('front')!r}")

# --- two zones and the front ---
two = render(auth=True, zones=("ch-gva-2", "de-fra-1"), front=True)
mon2 = files_of(two["monitor"], "monitor (two zones)")
api2 = read_env(mon2["/etc/poolpilot/env"])
check(api2 == {"EXOSCALE_ZONE": "ch-gva-2",
               "EXOSCALE_INSTANCEPOOL_ID": f"ch-gva-2:{POOL_IDS['ch-gva-2']},de-fra-1:{POOL_IDS['de-fra-1']}",
               "EXOSCALE_API_KEY": VALUES["api_key"], "EXOSCALE_API_SECRET": VALUES["api_secret"]},
      f"monitor (two zones): the discovery agent's env file yields {api2!r}")
check(read_env(mon2["/etc/poolpilot/autoscaler.env"]) == auto, "monitor (two zones): the autoscaler's settings are the same for every pool")
check(files_of(two["pool"], "pool (two zones)") == pool, "pool (two zones): the members' user-data does not depend on the zones")
# One zone with its pool outside the monitor's zone: the ZONE:ID form, never a bare id.
other = render(auth=True, zones=("de-fra-1",))
check(read_env(files_of(other["monitor"], "monitor (pool in de-fra-1)")["/etc/poolpilot/env"])["EXOSCALE_INSTANCEPOOL_ID"]
      == f"de-fra-1:{POOL_IDS['de-fra-1']}", "a pool outside the monitor's zone must be named with its zone")

front = files_of(two["front"], "front")
check(set(front) == {"/etc/poolpilot/env"}, f"front: files {sorted(front)}")
front_env = read_env(front["/etc/poolpilot/env"])
backends = f"ch-gva-2=http://{NLBS['ch-gva-2']}:80,de-fra-1=http://{NLBS['de-fra-1']}:80"
check(front_env == {"POOLPILOT_FRONT_BACKENDS": backends, "POOLPILOT_ELASTIC_IP": EIP},
      f"front: the env file yields {front_env!r}")
for secret in ("api_secret", "webhook_token", "drain_token", "prometheus_password", "grafana_admin_password"):
    check(VALUES[secret] not in two["front"], f"front: its user-data must hold no secret ({secret})")


def front_wrapper():
    """The front unit's wrapper script, as nixos-modules/poolpilot.nix writes it (Nix's ''${
    is a literal ${ in an indented string)."""
    nix = open(os.path.join(TF_DIR, "..", "nixos-modules", "poolpilot.nix")).read()
    m = re.search(r'writeShellScript "poolpilot-front-backends" \'\'\n(.*?)\n\s*\'\';', nix, re.S)
    if m is None:
        sys.exit("userdata: no poolpilot-front-backends script in nixos-modules/poolpilot.nix")
    lines = m.group(1).split("\n")
    indent = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
    return "\n".join(l[indent:] for l in lines).replace("\'\'${", "${") + "\n"


def wrapper_argv(env_text):
    """The command line the wrapper runs, given the front's environment file."""
    d = tempfile.mkdtemp(prefix="userdata-front-")
    try:
        script, envf = os.path.join(d, "wrapper.sh"), os.path.join(d, "env")
        with open(script, "w") as f:
            f.write(front_wrapper())
        with open(envf, "w") as f:
            f.write(env_text)
        r = subprocess.run(["env", "-i", "bash", "-c", 'set -a; . "$1"; set +a; exec bash "$2" printf "%s\\0" poolpilot front',
                            "sh", envf, script], capture_output=True)
        check(r.returncode == 0, f"the front wrapper failed: {r.stderr.decode()}")
        return r.stdout.decode().split("\0")[:-1]
    finally:
        shutil.rmtree(d, ignore_errors=True)


# nixos-modules/poolpilot.nix evaluated by Nix with a minimal lib and pkgs (nixpkgs cannot be
# evaluated here): the front unit's command line and its assertions, with backends from the
# environment and without.
FRONT_UNIT_EXPR = r'''
{ path, fromEnv, backends }:
let
  backendList = if backends == "" then [ ] else [ backends ];
  merge = a: b: a // builtins.mapAttrs (n: v:
    if a ? ${n} && builtins.isAttrs v && builtins.isAttrs a.${n} then merge a.${n} v
    else if a ? ${n} && builtins.isList v then a.${n} ++ v
    else v) b;
  filterAttrsRecursive = pred: set: builtins.listToAttrs (builtins.concatMap (name:
    let v = set.${name}; in
    if pred name v then [{ inherit name; value = if builtins.isAttrs v then filterAttrsRecursive pred v else v; }] else [ ])
    (builtins.attrNames set));
  lib = {
    mkOption = x: x; mkEnableOption = x: { }; mkPackageOption = a: b: c: { }; literalExpression = x: x;
    mkIf = c: v: if c then v else { };
    mkMerge = builtins.foldl' merge { };
    mkDefault = v: v;
    types = { str = "str"; bool = "bool"; path = "path"; nullOr = t: "nullOr"; enum = l: "enum"; either = a: b: "either"; listOf = t: "listOf"; ints = { unsigned = "u"; positive = "p"; }; };
    importJSON = f: builtins.fromJSON (builtins.readFile f);
    inherit filterAttrsRecursive;
    attrNames = builtins.attrNames; all = builtins.all;
    optional = c: v: if c then [ v ] else [ ];
    optionalString = c: s: if c then s else "";
    escapeShellArgs = l: builtins.concatStringsSep " " (map (a: "'${a}'") l);
    getExe = p: "/pkg/bin/poolpilot";
    splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
    toInt = builtins.fromJSON;
    last = l: builtins.elemAt l (builtins.length l - 1);
    concatStringsSep = builtins.concatStringsSep;
  };
  pkgs = {
    formats.toml = _: { generate = name: value: "/toml/${name}"; };
    writeShellScript = name: text: "/script/${name}";
  };
  m = import path {
    inherit lib pkgs;
    config = {
      services.cloud-init.enable = true;
      services.poolpilot = {
        package = "pkg"; environmentFile = "/etc/poolpilot/env";
        discovery.enable = false; autoscaler.enable = false; app.enable = false; kv.enable = false; replica.enable = false;
        front = {
          enable = true; backendsFromEnvironment = fromEnv;
          settings = { listen = "0.0.0.0:80"; adminListen = "127.0.0.1:9180"; backends = backendList; ejectAfter = 10; ejectMode = "total"; cooldown = "30s"; tryTimeout = "15s"; };
        };
      };
    };
  };
in {
  assertions = map (a: { inherit (a) assertion message; }) m.config.assertions;
  execStart = m.config.systemd.services.poolpilot-front.serviceConfig.ExecStart;
  environmentFile = m.config.systemd.services.poolpilot-front.serviceConfig.EnvironmentFile;
  ports = m.config.networking.firewall.allowedTCPPorts;
}
'''


def front_unit(from_env, backends):
    r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", FRONT_UNIT_EXPR,
                        "--arg", "path", os.path.abspath(os.path.join(TF_DIR, "..", "nixos-modules", "poolpilot.nix")),
                        "--arg", "fromEnv", "true" if from_env else "false", "--argstr", "backends", backends],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"nix-instantiate poolpilot.nix: {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else None


if shutil.which("nix-instantiate") is None:
    print("userdata: SKIPPED the front unit's evaluation (needs nix-instantiate)")
else:
    env_unit, plain_unit, bare_unit = front_unit(True, ""), front_unit(False, "ch-gva-2=http://198.51.100.10"), front_unit(False, "")
    if env_unit and plain_unit and bare_unit:
        check(env_unit["execStart"] == "/script/poolpilot-front-backends '/pkg/bin/poolpilot' '--config' '/toml/poolpilot-front.toml' 'front'",
              f"with backendsFromEnvironment the front runs through the wrapper: {env_unit['execStart']}")
        check(plain_unit["execStart"] == "'/pkg/bin/poolpilot' '--config' '/toml/poolpilot-front.toml' 'front'",
              f"without it, as before: {plain_unit['execStart']}")
        check(env_unit["environmentFile"] == ["-/etc/poolpilot/env"] and env_unit["ports"] == [80],
              f"the front reads /etc/poolpilot/env and opens port 80: {env_unit}")
        check(all(a["assertion"] for a in env_unit["assertions"] + plain_unit["assertions"]),
              f"assertions: {env_unit['assertions'] + plain_unit['assertions']}")
        check(not all(a["assertion"] for a in bare_unit["assertions"]),
              "no backends and none from the environment must fail the evaluation")

# The kv and replica units of the same module (the same minimal lib): their command lines come
# from units.json, the kv unit needs the environment file (REDIS_URL), the sidecar does not.
KV_UNITS_EXPR = FRONT_UNIT_EXPR.replace(
    "discovery.enable = false; autoscaler.enable = false; app.enable = false; kv.enable = false; replica.enable = false;",
    'discovery.enable = false; autoscaler.enable = false; app.enable = false; '
    'kv = { enable = true; settings = { listen = "0.0.0.0:8080"; redisTimeout = null; replicaConnections = null; replicaReconnect = "30s"; }; }; '
    'replica = { enable = true; settings = { listen = "0.0.0.0:8080"; redis = "redis://127.0.0.1:6379"; maxLastIo = "3s"; }; };'
).replace("enable = true; backendsFromEnvironment = fromEnv;", "enable = false; backendsFromEnvironment = fromEnv;").replace(
    """  execStart = m.config.systemd.services.poolpilot-front.serviceConfig.ExecStart;
  environmentFile = m.config.systemd.services.poolpilot-front.serviceConfig.EnvironmentFile;
  ports = m.config.networking.firewall.allowedTCPPorts;""",
    """  kv = { inherit (m.config.systemd.services.poolpilot-kv.serviceConfig) ExecStart EnvironmentFile; };
  replica = { inherit (m.config.systemd.services.poolpilot-replica.serviceConfig) ExecStart EnvironmentFile; };""")
if shutil.which("nix-instantiate") is not None:
    r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", KV_UNITS_EXPR,
                        "--arg", "path", os.path.abspath(os.path.join(TF_DIR, "..", "nixos-modules", "poolpilot.nix")),
                        "--arg", "fromEnv", "false", "--argstr", "backends", ""], capture_output=True, text=True)
    check(r.returncode == 0, f"nix-instantiate poolpilot.nix (kv, replica): {r.stderr[-800:]}")
    if r.returncode == 0:
        units = json.loads(r.stdout)
        check(units["kv"]["ExecStart"] == "'/pkg/bin/poolpilot' '--config' '/toml/poolpilot-kv.toml' 'kv'"
              and units["kv"]["EnvironmentFile"] == ["/etc/poolpilot/env"], f"the kv unit: {units['kv']}")
        check(units["replica"]["ExecStart"] == "'/pkg/bin/poolpilot' '--config' '/toml/poolpilot-replica.toml' 'replica'"
              and units["replica"]["EnvironmentFile"] == ["-/etc/poolpilot/env"], f"the replica unit: {units['replica']}")
        check(all(a["assertion"] for a in units["assertions"]), f"kv/replica assertions (settings.json keys): {units['assertions']}")

argv = wrapper_argv(front["/etc/poolpilot/env"])
check(argv == ["poolpilot", "front", "--backend", f"ch-gva-2=http://{NLBS['ch-gva-2']}:80",
               "--backend", f"de-fra-1=http://{NLBS['de-fra-1']}:80"],
      f"the front unit runs {argv!r}")
check(wrapper_argv("") == ["poolpilot", "front"], "without POOLPILOT_FRONT_BACKENDS the wrapper adds no flag (poolpilot then exits 64 naming backend)")


def elastic_ip_unit():
    """nixos-modules/front.nix's Elastic IP unit, evaluated by Nix with a minimal lib and pkgs
    (nixpkgs cannot be evaluated here); iproute2 is this machine's."""
    ip = shutil.which("ip")
    if ip is None or shutil.which("nix-instantiate") is None:
        return None
    prefix = os.path.dirname(os.path.dirname(ip))
    expr = f"""
let
  lib = {{ optional = c: v: if c then [ v ] else [ ]; }};
  m = import (/. + {json.dumps(os.path.join(TF_DIR, "..", "nixos-modules", "front.nix"))}) {{
    inherit lib;
    pkgs = {{ iproute2 = {json.dumps(prefix)}; }};
    config = {{ services.poolpilot.environmentFile = "/etc/poolpilot/env"; services.cloud-init.enable = true; }};
  }};
in {{ unit = m.systemd.services.poolpilot-elastic-ip; front = m.services.poolpilot.front; }}"""
    r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr], capture_output=True, text=True)
    check(r.returncode == 0, f"nix-instantiate front.nix: {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else None


ev = elastic_ip_unit()
if ev is None:
    print("userdata: SKIPPED the Elastic IP unit (needs ip and nix-instantiate)")
else:
    unit, svc = ev["unit"], ev["unit"]["serviceConfig"]
    check(ev["front"] == {"enable": True, "backendsFromEnvironment": True}, f"front.nix: services.poolpilot.front = {ev['front']}")
    check(svc["EnvironmentFile"] == "/etc/poolpilot/env" and svc["Type"] == "oneshot" and svc["RemainAfterExit"] is True,
          f"the Elastic IP unit: {svc}")
    check("poolpilot-front.service" in unit["before"] and "cloud-init.service" in unit["after"],
          f"the Elastic IP unit runs after cloud-init and before the front: {unit}")
    # systemd's ${VAR} expansion inside a word, from the environment file.
    expand = lambda cmd: re.sub(r"\$\{([A-Z_]+)\}", lambda m: front_env.get(m.group(1), ""), cmd).split()
    start = expand(svc["ExecStart"])
    check(start[1:] == ["address", "replace", f"{EIP}/32", "dev", "lo"], f"ExecStart expands to {start}")
    probe = (f"ip link set lo up && {' '.join(start)} && python3 -c \"import socket; s = socket.socket(); "
             f"s.bind(('0.0.0.0', 0)); s.listen(); c = socket.create_connection(('{EIP}', s.getsockname()[1]), timeout=5); "
             f"a, _ = s.accept(); print(a.getsockname()[0])\" && {' '.join(expand(svc['ExecStop']))} && ip -4 -o address show dev lo")
    r = subprocess.run(["unshare", "-rn", "sh", "-c", probe], capture_output=True, text=True)
    if r.returncode != 0 and "unshare" in r.stderr and "Operation not permitted" in r.stderr:
        print("userdata: SKIPPED running the Elastic IP unit (no network namespaces here)")
    else:
        lines = r.stdout.splitlines()
        check(r.returncode == 0 and lines[:1] == [EIP] and EIP not in "".join(lines[1:]),
              f"the Elastic IP on lo: a listener on 0.0.0.0 must answer on {EIP}, and ExecStop remove it: {r.stdout}{r.stderr}")

web = mon["/etc/poolpilot/prometheus-web.yml"]
check(VALUES["prometheus_password"] not in web, "the web config must hold the hash, not the password")
pw = VALUES["prometheus_password"]
got = prometheus_answers(web, [None, ("prometheus", pw + "x"), ("prometheus", pw)])
check(got == [401, 401, 200], f"Prometheus with the web config: without / wrong / right password answered {got}, expected [401, 401, 200]")

# --- profile = "redis": the replicas', the API members' and the monitor's user-data ---
red = render(auth=True, kv=True)
check(red.get("pool") is not None and red.get("front") is None, "redis: no front user-data")
rep_files = files_of(red["replica"], "replica")
kv_files = files_of(red["kv"], "kv")
check(set(rep_files) == {"/etc/poolpilot/env"} and set(kv_files) == {"/etc/poolpilot/env"}, f"redis members: files {sorted(rep_files)}, {sorted(kv_files)}")
rep_env, kv_env = read_env(rep_files["/etc/poolpilot/env"]), read_env(kv_files["/etc/poolpilot/env"])
check(rep_env == {"POOLPILOT_REDIS_PRIMARY": KV["primary"], "POOLPILOT_DRAIN_TOKEN": VALUES["drain_token"]},
      f"replica: the env file yields {rep_env!r}")
check(kv_env == {"REDIS_URL": f"redis://{KV['primary']}:6379", "REDIS_REPLICAS_URL": f"redis://{KV['replicas']}:6379",
                 "POOLPILOT_DRAIN_TOKEN": VALUES["drain_token"]}, f"kv: the env file yields {kv_env!r}")
for which, text in (("replica", red["replica"]), ("kv", red["kv"])):
    for secret in ("api_secret", "webhook_token", "prometheus_password", "grafana_admin_password"):
        check(VALUES[secret] not in text, f"{which}: its user-data must hold no {secret}")
red_mon = files_of(red["monitor"], "monitor (redis)")
check(set(red_mon) == expected_files | {"/etc/poolpilot/redis-primary.json"}, f"monitor (redis): files {sorted(red_mon)}")
red_api = read_env(red_mon["/etc/poolpilot/env"])
check(red_api == {"EXOSCALE_ZONE": "ch-gva-2",
                  "EXOSCALE_INSTANCEPOOL_ID": f"replicas=ch-gva-2:{KV_POOLS['replicas']},api=ch-gva-2:{KV_POOLS['api']}",
                  "EXOSCALE_API_KEY": VALUES["api_key"], "EXOSCALE_API_SECRET": VALUES["api_secret"]},
      f"monitor (redis): the two pools, named as the kv monitor's per-pool tables name them: {red_api!r}")
check(read_env(red_mon["/etc/poolpilot/autoscaler.env"]) == auto, "monitor (redis): the autoscaler's env file is the course's")
sd = json.loads(red_mon["/etc/poolpilot/redis-primary.json"])
want_sd = sorted([(f"{KV['primary']}:{port}", name) for name, port in (("node", 9100), ("redis", 9121))])
got_sd = sorted((t, g["labels"].get("exoscale_target_name")) for g in sd for t in g["targets"])
check(got_sd == want_sd and all(g["labels"].get("exoscale_target_port") == g["targets"][0].rsplit(":", 1)[1] for g in sd),
      f"monitor (redis): the primary's file_sd targets {got_sd}, expected {want_sd}")
check("/etc/poolpilot/redis-primary.json" not in mon, "monitor (course): no Redis primary targets")

# --- prometheus_auth = false: the course checker's case ---
mon_open = files_of(render(auth=False)["monitor"], "monitor (no auth)")
got = prometheus_answers(mon_open["/etc/poolpilot/prometheus-web.yml"], [None])
check(got == [200], f"Prometheus without authentication answered {got}")


# --- profile = "redis": the kv monitor's Prometheus on the primary's targets from the user-data ---
# nixos-modules/kv-prometheus.nix as Nix evaluates it, its paths moved into a temporary
# directory, run by a real Prometheus with the primary's file_sd file from the monitor's
# user-data above and a discovery file as the agent writes it (a replica and an API member, each
# listed on node, app and redis): the `redis` job must scrape the replica's and the primary's
# exporters and not the API member's 9121 (nothing listens there), the `node` job every member
# and the primary.
def kv_prometheus_targets():
    r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr",
                        f"import {os.path.join(TF_DIR, '..', 'nixos-modules', 'kv-prometheus.nix')} {{ }}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        check(False, f"kv-prometheus.nix does not evaluate: {r.stderr[-500:]}")
        return None
    d = tempfile.mkdtemp(prefix="userdata-kvprom-")
    try:
        os.mkdir(os.path.join(d, "sd"))
        with open(os.path.join(d, "primary.json"), "w") as f:
            f.write(red_mon["/etc/poolpilot/redis-primary.json"])
        members = {"poolpilot-replicas-a1b2c": "127.0.0.2", "poolpilot-api-d3e4f": "127.0.0.3"}
        groups = [{"targets": [f"{ip}:{port}"], "labels": {"exoscale_instance_name": name, "exoscale_target_name": tname,
                                                          "exoscale_target_port": str(port), "exoscale_zone": "ch-gva-2"}}
                  for name, ip in members.items() for tname, port in (("node", 9100), ("app", 8080), ("redis", 9121))]
        with open(os.path.join(d, "sd", "config.json"), "w") as f:
            json.dump(groups, f)
        text = (json.loads(r.stdout).replace("/srv/service-discovery/*.json", os.path.join(d, "sd", "*.json"))
                .replace("/etc/poolpilot/redis-primary.json", os.path.join(d, "primary.json"))
                .replace("/etc/poolpilot/prometheus/rules.yml", os.path.join(TF_DIR, "..", "monitoring", "prometheus", "rules.yml")))
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(text)
        port = free_port()
        p = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                              f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        want_jobs = {"node", "app", "redis", "poolpilot"}
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets?state=active", timeout=5) as resp:
                        active = json.load(resp)["data"]["activeTargets"]
                    got = {}
                    for t in active:
                        got.setdefault(t["labels"]["job"], set()).add(t["labels"]["instance"])
                    if want_jobs <= set(got) and len(got.get("node", ())) == 3:
                        return got
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
            check(False, f"the kv monitor's Prometheus listed no targets within 60 s: {p.stderr.read().decode()[-1500:] if p.poll() is not None else ''}")
            return None
        finally:
            if p.poll() is None:
                p.terminate()
            p.wait(timeout=30)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if shutil.which("nix-instantiate") is None:
    print("userdata: SKIPPED the kv monitor's Prometheus (needs nix-instantiate)")
else:
    got = kv_prometheus_targets()
    if got is not None:
        check(got["redis"] == {"127.0.0.2:9121", f"{KV['primary']}:9121"}, f"kv monitor: the redis job scrapes {sorted(got['redis'])}")
        check(got["node"] == {"127.0.0.2:9100", "127.0.0.3:9100", f"{KV['primary']}:9100"}, f"kv monitor: the node job scrapes {sorted(got['node'])}")
        check(got["app"] == {"127.0.0.2:8080", "127.0.0.3:8080"}, f"kv monitor: the app job scrapes {sorted(got['app'])}")

# --- profile = "redis": the replica's Redis, as its modules configure it, with a real Redis ---
# nixos-modules/redis-primary.nix and redis-replica.nix evaluated by Nix with a minimal lib and
# pkgs: their Redis settings rendered as nixpkgs' module renders them (`key value`, booleans as
# yes/no), the replica's oneshot script run on the replica's env file from the user-data above.
# Then a real primary and a real replica (127.0.0.1, ports of their own) with those settings:
# the replica follows the primary the script named, reads back a write, and, once the primary
# stops, refuses reads (no stale data) instead of answering them.
REDIS_ROLE_EXPR = r'''
{ path }:
let
  m = import path {
    config = { services.cloud-init.enable = true; services.poolpilot.environmentFile = "/etc/poolpilot/env"; };
    lib = { optional = c: v: if c then [ v ] else [ ]; };
    pkgs = { gnugrep = "/usr"; };
  };
  redis = m.services.redis.servers."";
in {
  settings = redis.settings;
  appendOnly = redis.appendOnly;
  save = redis.save or null;
  script = m.systemd.services.poolpilot-redis-primary.script or null;
  maxLastIo = m.services.poolpilot.replica.settings.maxLastIo or null;
}
'''


def redis_role(name):
    r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", REDIS_ROLE_EXPR,
                        "--arg", "path", os.path.join(TF_DIR, "..", "nixos-modules", f"{name}.nix")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        check(False, f"nixos-modules/{name}.nix does not evaluate: {r.stderr[-800:]}")
        return None
    return json.loads(r.stdout)


def redis_conf(role, port, workdir):
    """The role's settings as nixpkgs writes them, with this test's port and directory."""
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {workdir}", "daemonize no", "logfile \"\"",
             f"appendonly {'yes' if role['appendOnly'] else 'no'}"]
    if role["save"] == []:
        lines.append('save ""')
    for k, v in sorted(role["settings"].items()):
        lines.append(f"{k} {'yes' if v is True else 'no' if v is False else v}")
    return "\n".join(lines) + "\n"


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=10)


def wait_for(cond, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    check(False, f"{what}: not within {seconds} s")
    return False


if shutil.which("nix-instantiate") is None or shutil.which("redis-server") is None:
    print("userdata: SKIPPED the Redis roles (needs nix-instantiate and redis-server)")
else:
    primary_role, replica_role = redis_role("redis-primary"), redis_role("redis-replica")
    if primary_role and replica_role:
        check(primary_role["appendOnly"] is True and replica_role["appendOnly"] is False and replica_role["save"] == [],
              "the primary persists (AOF), a replica does not")
        check(replica_role["settings"].get("replica-serve-stale-data") is False and replica_role["settings"].get("repl-ping-replica-period") == 1
              and replica_role["settings"].get("repl-timeout") == 5 and primary_role["settings"].get("repl-ping-replica-period") == 1,
              f"replica settings: {replica_role['settings']}")
        check(replica_role["maxLastIo"] == "3s", f"the sidecar's --max-last-io must fit the 1 s ping: {replica_role['maxLastIo']}")
        d = tempfile.mkdtemp(prefix="userdata-redis-")
        procs = []
        try:
            include = os.path.join(d, "replicaof.conf")
            script = replica_role["script"].replace("/run/poolpilot-redis/replicaof.conf", include)

            def run_script(env_text):
                envf = os.path.join(d, "env")
                with open(envf, "w") as f:
                    f.write(env_text)
                return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "bash", "-c", 'set -a; . "$1"; set +a; exec bash -c "$2"',
                                       "sh", envf, script], capture_output=True, text=True)

            # A hostile value never reaches Redis' configuration.
            bad = run_script('POOLPILOT_REDIS_PRIMARY="198.51.100.1 6379\nrequirepass x"\n')
            check(bad.returncode != 0 and not os.path.exists(include), f"the replicaof script must refuse a non-address: rc={bad.returncode}")
            check(run_script("").returncode != 0, "the replicaof script must fail without POOLPILOT_REDIS_PRIMARY")
            # The user-data's env file, with the primary moved to 127.0.0.1 (the test's own).
            env_text = rep_files["/etc/poolpilot/env"].replace(KV["primary"], "127.0.0.1")
            ok = run_script(env_text)
            check(ok.returncode == 0, f"the replicaof script failed: {ok.stderr}")
            pport, rport = free_port(), free_port()
            if ok.returncode == 0:
                with open(include) as f:
                    check(f.read() == "replicaof 127.0.0.1 6379\n", "the include file must be one replicaof line")
                with open(include, "w") as f:
                    f.write(f"replicaof 127.0.0.1 {pport}\n")  # the test's primary port
            for name, role, port in (("primary", primary_role, pport), ("replica", replica_role, rport)):
                wd = os.path.join(d, name)
                os.mkdir(wd)
                conf = os.path.join(wd, "redis.conf")
                settings = dict(role["settings"])
                if "include" in settings:
                    settings["include"] = include
                with open(conf, "w") as f:
                    f.write(redis_conf(dict(role, settings=settings), port, wd))
                procs.append(subprocess.Popen(["redis-server", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if wait_for(lambda: "master_link_status:up" in redis_cli(rport, "INFO", "replication").stdout, "the replica's link to the primary"):
                info = redis_cli(rport, "INFO", "replication").stdout
                check("role:slave" in info and f"master_port:{pport}" in info, f"the replica follows the primary: {info[:300]}")
                check(redis_cli(pport, "SET", "k", "v").stdout.strip() == "OK", "a write to the primary")
                wait_for(lambda: redis_cli(rport, "GET", "k").stdout.strip() == "v", "the write read back from the replica")
                check(redis_cli(pport, "CONFIG", "GET", "appendonly").stdout.split() == ["appendonly", "yes"], "the primary's AOF is on")
                procs[0].terminate()
                procs[0].wait(timeout=30)
                wait_for(lambda: "MASTERDOWN" in redis_cli(rport, "GET", "k").stdout, "a replica without its primary refuses reads")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=30)
            shutil.rmtree(d, ignore_errors=True)

if failures:
    for f in failures:
        print(f"userdata: FAIL: {f}")
    sys.exit(1)
print("userdata: ok: the cloud-configs (monitor, pool, front; one zone and two) rendered by Terraform, "
      "parsed by PyYAML and the shell; the front's flags and Elastic IP as its units use them; "
      "Prometheus' web config enforced by Prometheus")
