//! The `switchyard` binary: parse flags and config, then run the node or mint a token.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard::auth::{unix_now, Auth, MintClaims};
use switchyard::config::Config;

// jemalloc hands freed pages back to the system: after connection churn the node's
// RSS returns to what its live connections need (glibc's arenas keep a plateau).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Real-time WebSocket gateway")]
struct Cli {
    /// TOML config file (also SWITCHYARD_CONFIG). Without one: development mode.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (the default).
    Run,
    /// Mint a token with the configured secret and print it.
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Mint a subscription token for this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Fill the `channels` claim (repeatable).
        #[arg(long = "subscribe")]
        subscribe: Vec<String>,
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("switchyard: {msg}");
    std::process::exit(2)
}

fn main() {
    let cli = Cli::parse();
    let (config, unknown) = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => fail(e),
    };
    if let Err(e) = switchyard::check(&config) {
        fail(e)
    }
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Token {
            sub,
            tenant,
            roles,
            channel,
            subscribe,
            ttl,
        } => {
            if config.dev_mode {
                fail("token needs a config with auth.jwt_secret (--config or SWITCHYARD_CONFIG)");
            }
            let ttl: Duration =
                humantime::parse_duration(&ttl).unwrap_or_else(|e| fail(format!("--ttl: {e}")));
            let auth = Auth::from_config(&config).unwrap_or_else(|e| fail(e));
            let claims = MintClaims {
                sub,
                exp: unix_now() + ttl.as_secs(),
                tenant_id: tenant,
                roles,
                channel,
                channels: subscribe,
                allow: Vec::new(),
                info: None,
                iat: None,
            };
            println!("{}", auth.mint(&claims).unwrap_or_else(|e| fail(e)));
        }
        Cmd::Run => run(config, unknown),
    }
}

fn run(config: Config, unknown: Vec<String>) {
    switchyard::logging::init(&config.log);
    for name in unknown {
        tracing::warn!(variable = %name, "unknown SWITCHYARD_* environment variable ignored");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    let code = runtime.block_on(async move {
        let addr = config.listen_addr().unwrap_or_else(|e| fail(e));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| fail(format!("cannot listen on {addr}: {e}")));
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if config.dev_mode {
            print_dev_banner(&config, &local);
        }
        tracing::info!(listen = %local, node = %config.node_id, broker = ?config.broker, "switchyard listening");
        match switchyard::run(config, listener, shutdown_signal()).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "node failed");
                1
            }
        }
    });
    std::process::exit(code)
}

/// Development mode prints a working token and a publish command (stdout only).
fn print_dev_banner(config: &Config, addr: &str) {
    let Ok(auth) = Auth::from_config(config) else {
        return;
    };
    let claims = MintClaims {
        sub: "dev".into(),
        exp: unix_now() + 24 * 3600,
        ..MintClaims::default()
    };
    let Ok(token) = auth.mint(&claims) else {
        return;
    };
    // Written without println!: a closed stdout must not take the node down.
    use std::io::Write;
    let key = &config.api.key;
    let banner = format!(
        "switchyard development mode (no config): generated secrets, {broker} broker\n  connect:  ws://{addr}/ws?token={token}\n  publish:  curl -s -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\\n              -d '{{\"channel\":\"user:dev\",\"type\":\"hello\",\"payload\":{{\"text\":\"hi\"}}}}' \\\n              http://{addr}/api/publish\n  demo:     http://{addr}/demo  (open it in two browser windows)\n",
        broker = match config.broker {
            switchyard::config::BrokerKind::Memory => "memory",
            switchyard::config::BrokerKind::Redis => "redis",
        },
    );
    let mut out = std::io::stdout();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
