# NixOS VM test: the services run unprivileged with the sandbox on.
{ pkgs, self }:

pkgs.testers.runNixOSTest {
  name = "poolpilot-sandbox";

  nodes.machine = { ... }: {
    imports = [ self.nixosModules.poolpilot ];
    services.poolpilot = {
      package = self.packages.x86_64-linux.poolpilot;
      environmentFile = null;
      app.enable = true;
    };
  };

  testScript = ''
    machine.wait_for_unit("poolpilot-app.service")
    machine.wait_for_open_port(8080)
    machine.succeed("curl -sf http://127.0.0.1:8080/health | grep -qx OK")

    # A dynamic, unprivileged user, no capabilities, no new privileges.
    pid = machine.succeed("systemctl show -p MainPID --value poolpilot-app").strip()
    status = machine.succeed(f"cat /proc/{pid}/status")
    uid = [l for l in status.splitlines() if l.startswith("Uid:")][0].split()[1]
    assert uid != "0", f"runs as root: {status}"
    assert "CapEff:\t0000000000000000" in status, status
    assert "NoNewPrivs:\t1" in status, status

    # systemd's own judgement of the sandbox.
    exposure = machine.succeed("systemd-analyze security poolpilot-app.service | tail -1")
    score = float(exposure.split()[-3])
    assert score < 3.0, f"exposure {exposure}"

    # /load still works under the syscall filter (the burners lower their priority), and the
    # unit stops cleanly.
    machine.succeed("curl -sf -m 30 http://127.0.0.1:8080/load | grep -q 'Load generation done.'")
    machine.succeed("systemctl stop poolpilot-app")
    machine.succeed("test \"$(systemctl show -p Result --value poolpilot-app)\" = success")
  '';
}
