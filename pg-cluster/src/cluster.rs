//! A private PostgreSQL cluster in a temporary folder.
//!
//! `initdb` and `postgres` refuse to run as root. When we are root (CI,
//! containers), every server command runs as the `postgres` OS user through
//! `runuser`, on a folder that user owns; as an ordinary user they run
//! directly. A watchdog shell process holds the read end of a pipe whose
//! write end only this process holds: when this process ends for any reason,
//! panics and kills included, the watchdog stops the cluster and removes its
//! folder.
//!
//! Every cluster also serves TLS, with a certificate for `localhost` and
//! `127.0.0.1` from a CA of its own (kept in its folder), so clients can be
//! tested with `sslmode=verify-full` as production connects.

use std::{
    io::{self, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
};

use std::os::unix::process::CommandExt;

/// Where the PostgreSQL server binaries are: `PG_BIN` if set, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian, Ubuntu), else `pg_config --bindir`,
/// else the folder of an `initdb` on `PATH`.
pub fn find_bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; \
                 install them with `apt-get install -y postgresql` or set PG_BIN",
            )
        })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn postgres_ids() -> io::Result<(u32, u32)> {
    let id = |flag: &str| -> io::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "running as root needs a `postgres` OS user to run PostgreSQL",
            )
        })
    };
    Ok((id("-u")?, id("-g")?))
}

/// Picks a free TCP port on 127.0.0.1 for a server that binds it later.
///
/// The port comes from below the kernel's ephemeral range: ports in that
/// range are handed out for outgoing connections and port-0 binds at any
/// moment, so one picked there can be taken before its server binds it.
/// A port is handed out once per process: tests that stop a server and
/// start it again on its port never find another test's server there.
pub fn free_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = 10_000.min(low.saturating_sub(1_000));
    let mut handed_out = HANDED_OUT.lock().expect("port registry");
    for _ in 0..1000 {
        let port = rand::random_range(floor..low);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The server's TLS files, in its data folder.
const TLS_CA: &str = "clinic-tls-ca.pem";
const TLS_CERT: &str = "clinic-tls-server.pem";
const TLS_KEY: &str = "clinic-tls-server-key.pem";

/// A running private PostgreSQL cluster; stopped and removed on drop, and by
/// its watchdog if this process dies first.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    keep: bool,
    watchdog: Mutex<Option<Child>>,
}

impl PgCluster {
    /// Creates and starts a throwaway cluster in a new temporary folder.
    pub fn start() -> io::Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "clinic-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        Self::start_in(&root, free_port()?, false)
    }

    /// Starts the cluster in `root` on `port`, creating it first if `root`
    /// holds none. With `keep`, the folder survives stop, drop and the death
    /// of this process (for `make up`, whose data outlives a run); the server
    /// is stopped in every case.
    pub fn start_in(root: &Path, port: u16, keep: bool) -> io::Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = is_root();
        // Absolute: the server resolves relative paths against its data folder.
        let root = &std::path::absolute(root)?;
        std::fs::create_dir_all(root)?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(root, Some(uid), Some(gid))?;
        }
        let data = root.join("data");
        let cluster = Self { bin, data, port, as_postgres, keep, watchdog: Mutex::new(None) };
        if !cluster.data.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        cluster.ensure_tls()?;
        if cluster.is_running() {
            // Left running by an owner that died without stopping it.
            cluster.stop()?;
        }
        cluster.spawn_watchdog(root, !keep)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (data and log).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The CA that signed the server's certificate (PEM), for clients that
    /// verify it (`sslrootcert`).
    pub fn tls_ca_file(&self) -> PathBuf {
        self.data.join(TLS_CA)
    }

    /// Writes the server's certificate and key (and their CA) into the data
    /// folder if they are not there yet: owned by the server's user, the key
    /// readable by it alone, as PostgreSQL requires.
    fn ensure_tls(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.data.join(TLS_KEY).exists() {
            return Ok(());
        }
        let certs = clinic_dev_keys::certificates(&[]).map_err(|e| io::Error::other(e.0))?;
        for (name, contents, mode) in [
            (TLS_CA, &certs.ca_pem, 0o644),
            (TLS_CERT, &certs.cert_pem, 0o644),
            (TLS_KEY, &certs.key_pem, 0o600),
        ] {
            let path = self.data.join(name);
            std::fs::write(&path, contents)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            if self.as_postgres {
                let (uid, gid) = postgres_ids()?;
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }

    /// A superuser connection URL for `database`.
    pub fn admin_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Our own process group: a Ctrl-C meant for the test runner must not
        // kill the server before the watchdog can stop it cleanly.
        cmd.process_group(0).stdin(Stdio::null());
        cmd
    }

    fn run(mut cmd: Command, what: &str) -> io::Result<()> {
        let out = cmd.output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    fn initdb(&self) -> io::Result<()> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        Self::run(cmd, "initdb")
    }

    /// Starts the server (again, after [`PgCluster::stop`]) and waits until it accepts connections.
    pub fn start_server(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB \
             -c ssl=on -c ssl_cert_file={TLS_CERT} -c ssl_key_file={TLS_KEY}",
            self.port,
            self.data.display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("-l").arg(self.data.join("server.log"));
        cmd.args(["-w", "-t", "60", "-o", &options, "start"]);
        Self::run(cmd, "pg_ctl start")
    }

    /// Whether a server is running on this cluster's folder.
    pub fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("status").stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    /// Stops the server fast (open connections are closed); the folder stays.
    pub fn stop(&self) -> io::Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(["-w", "-m", "fast", "stop"]);
        Self::run(cmd, "pg_ctl stop")
    }

    /// Starts the watchdog that stops the server (and, with `remove`,
    /// deletes `root`) once this process is gone.
    fn spawn_watchdog(&self, root: &Path, remove: bool) -> io::Result<()> {
        let runuser = if self.as_postgres { "runuser -u postgres -- " } else { "" };
        let (mode, cleanup) = if remove {
            ("immediate", format!("; rm -rf '{}'", root.display()))
        } else {
            ("fast", String::new())
        };
        let script = format!(
            "trap '' INT TERM HUP; read _ignored; {runuser}'{}' -D '{}' -m {mode} stop >/dev/null 2>&1{cleanup}",
            self.bin.join("pg_ctl").display(),
            self.data.display(),
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        *self.watchdog.lock().expect("watchdog lock") = Some(child);
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.keep {
            let _ = self.stop();
        }
        if let Some(mut child) = self.watchdog.lock().map(|mut w| w.take()).ok().flatten() {
            // Closing the pipe (or a line on it) lets the watchdog clean up now.
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }
}
