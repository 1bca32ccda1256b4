//! The project's real nginx config (`nginx/switchyard.conf`), rendered with loopback
//! upstreams and free ports, run by the real nginx binary; stopped by PID on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TempDir};

pub struct Nginx {
    pub public: u16,
    pub internal: u16,
    child: Child,
    _dir: TempDir,
}

/// The shipped config with its upstream servers and listen ports replaced.
pub fn render(upstreams: &[SocketAddr], public: u16, internal: u16) -> String {
    let shipped = std::fs::read_to_string(format!(
        "{}/../nginx/switchyard.conf",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("nginx/switchyard.conf");
    let servers: String = upstreams
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    let mut out = String::new();
    let mut in_upstream = false;
    for line in shipped.lines() {
        let t = line.trim();
        if t.starts_with("upstream ") {
            in_upstream = true;
            out.push_str(line);
            out.push('\n');
            out.push_str(&servers);
            continue;
        }
        if in_upstream && t.starts_with("server ") {
            continue;
        }
        if in_upstream && t == "}" {
            in_upstream = false;
        }
        let line = line
            .replace("listen 80;", &format!("listen 127.0.0.1:{public};"))
            .replace("listen 8081;", &format!("listen 127.0.0.1:{internal};"));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

impl Nginx {
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        let dir = TempDir::new("nginx");
        let (public, internal) = (free_port(), free_port());
        let site = render(upstreams, public, internal)
            .replace("/var/log/nginx/", &format!("{}/logs/", dir.0.display()));
        std::fs::write(dir.0.join("switchyard.conf"), site).expect("write site");
        for d in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.0.join(d)).expect("dir");
        }
        let t = dir.0.join("tmp");
        let main = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  include {p}/switchyard.conf;\n}}\n",
            p = dir.0.display(),
            t = t.display()
        );
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, main).expect("write nginx.conf");
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .expect("nginx must be installed (scripts/test installs it)");
        let check = Command::new(nginx)
            .arg("-t")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("nginx -t");
        assert!(
            check.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", public)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {public}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            public,
            internal,
            child,
            _dir: dir,
        }
    }
}

impl Nginx {
    /// What the shipped config's access log holds so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("logs/switchyard.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
