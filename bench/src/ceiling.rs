//! The ceilings Clinic's GetPatient is measured against, in the same run on
//! the same table: `clinic-ceiling` (a minimal tonic + sqlx server doing the
//! same SELECT and nothing else: the framework's ceiling), it behind an
//! Envoy with only the router filter (the proxy's ceiling), and it answering
//! without a database (the gRPC stack's limit).

use std::{path::Path, process::Stdio, time::Duration};

/// A ceiling server, a process of its own, killed when dropped.
pub struct Ceiling {
    /// Where it listens.
    pub port: u16,
    child: tokio::process::Child,
}

impl Ceiling {
    /// Its process, for the cores it uses.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts `clinic-ceiling` (built beside this binary) on a free port: with
/// `database_url`, reading the patients table; without, answering from
/// memory.
pub async fn start(database_url: Option<&str>) -> Result<Ceiling, Box<dyn std::error::Error>> {
    let port = clinic_pg_cluster::cluster::free_port()?;
    let bin = std::env::current_exe()?.with_file_name("clinic-ceiling");
    let mut command = tokio::process::Command::new(bin);
    command.args(["--port", &port.to_string()]).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let child = command.spawn()?;
    let ceiling = Ceiling { port, child };
    wait_listening(port).await?;
    Ok(ceiling)
}

async fn wait_listening(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listened on port {port} within 10 s").into())
}

/// An Envoy with only the router filter in front of `upstream`, as a child
/// process killed when dropped.
pub struct RouterOnlyEnvoy {
    /// Its listener.
    pub port: u16,
    child: tokio::process::Child,
}

impl RouterOnlyEnvoy {
    /// Its process, for the cores it uses.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for RouterOnlyEnvoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts Envoy (`bin`) with a listener on `port` routing everything to
/// `upstream` over HTTP/2, with the router filter alone; its config and log
/// go to `dir`.
pub async fn router_only_envoy(
    bin: &Path,
    dir: &Path,
    port: u16,
    admin_port: u16,
    upstream: u16,
) -> Result<RouterOnlyEnvoy, Box<dyn std::error::Error>> {
    let config = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
static_resources:
  listeners:
    - name: bare
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bare
                codec_type: AUTO
                route_config:
                  virtual_hosts:
                    - name: bare
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: bare, timeout: 15s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: bare
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: bare
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    );
    std::fs::create_dir_all(dir)?;
    let file = dir.join("router-only-envoy.yaml");
    std::fs::write(&file, config)?;
    let log = std::fs::File::create(dir.join("router-only-envoy.log"))?;
    let child = tokio::process::Command::new(bin)
        .args(["-c", &file.display().to_string(), "--disable-hot-restart", "--log-level", "warn"])
        .args(["--base-id", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let envoy = RouterOnlyEnvoy { port, child };
    wait_listening(port).await?;
    Ok(envoy)
}
