//! `tessera`: flags/config, logging, then `signaling::serve_node` until SIGINT/SIGTERM (in
//! a cluster, SIGTERM drains first).

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use tessera::config::{Cli, Config};
use tessera::layout::LayoutSet;
use tessera::room::{RoomSettings, Rooms};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The load generator's own WebRTC stack warns about every early packet: errors only.
    let default_filter = if matches!(args.command, Some(Command::Load(_))) {
        "warn,webrtc=error,rtc=error,rtc_ice=error"
    } else {
        "info,webrtc=warn,rtc=warn,rsipstack=warn"
    };
    // The SIP stack's transport logs every raw message at `info` — SDP bodies with SRTP
    // keys (SDES) among them — so it is held at `warn` whatever RUST_LOG says: secrets
    // never reach the log.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into())
        .add_directive(
            "rsipstack::transport=warn"
                .parse()
                .expect("a literal directive"),
        );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tessera::room::tune_allocator();
    match args.command {
        None => serve(&args.server),
        Some(Command::Bench {
            what: BenchCommand::Room(args),
        }) => {
            if let Some(dir) = &args.write_inputs {
                tessera::bench::write_inputs(&args, dir)?;
                return Ok(());
            }
            let report = tessera::bench::run(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                tessera::bench::print_table(&report);
            }
            Ok(())
        }
        Some(Command::Bench {
            what: BenchCommand::Encoder(args),
        }) => {
            let report = tessera::bench::encoder::run(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                tessera::bench::encoder::print_table(&report);
            }
            Ok(())
        }
        Some(Command::Token(t)) => token(&t),
        Some(Command::Load(l)) => {
            let json = l.json;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let summary = rt.block_on(tessera::load::run(l))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                tessera::load::print_summary(&summary);
            }
            Ok(())
        }
    }
}

/// The command line: server flags, or a subcommand.
#[derive(Parser, Debug)]
#[command(name = "tessera", version, about = "Tessera WebRTC MCU")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: Cli,
}

/// Subcommands (no subcommand = run the server).
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Prints a signed access token (the token alone on the last line).
    Token(TokenArgs),
    /// Joins synthetic WebRTC participants to a running server and reports what they got.
    Load(tessera::load::LoadArgs),
}

#[derive(clap::Subcommand, Debug)]
enum BenchCommand {
    /// Runs N synthetic participants through the real media pipeline without a network.
    Room(tessera::bench::RoomBenchArgs),
    /// openh264's analysis passes (scene-change detection, adaptive quantisation) on
    /// composed pictures: encode time per frame and PSNR at the same bitrate.
    Encoder(tessera::bench::encoder::EncoderBenchArgs),
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// The room the token opens (not needed with --admin).
    #[arg(long)]
    room: Option<String>,
    /// Display name the participant gets.
    #[arg(long)]
    name: Option<String>,
    /// Identity (`sub`); defaults to the name, or `admin`.
    #[arg(long)]
    identity: Option<String>,
    /// Makes the holder a moderator of the room.
    #[arg(long)]
    moderator: bool,
    /// Lets the holder start and stop the room's recording.
    #[arg(long)]
    record: bool,
    /// An admin token: every room, the control API, /metrics and the dashboard.
    #[arg(long)]
    admin: bool,
    /// The holder's audio and video do not reach the room (watch only).
    #[arg(long)]
    no_publish: bool,
    /// The holder receives no composite or mix (send only).
    #[arg(long)]
    no_subscribe: bool,
    /// A watcher's token: WHEP and HLS of the room only (subscribe; no join, no publish).
    #[arg(long, conflicts_with_all = ["no_subscribe", "moderator", "admin"])]
    watch: bool,
    /// Lifetime: 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Configuration file to read `api_secret` (and `listen`) from.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The API secret (as the server's).
    #[arg(long, env = "TESSERA_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
}

fn token(t: &TokenArgs) -> anyhow::Result<()> {
    use tessera::auth::{Claims, Grants};
    let config = Config::load(&Cli {
        config: t.config.clone(),
        api_secret: t.api_secret.clone(),
        insecure: true,
        ..Default::default()
    })?;
    if config.api_secret.is_none() {
        anyhow::bail!(
            "no API secret: give --api-secret, TESSERA_API_SECRET or `api_secret` in the config"
        );
    }
    let room = match (&t.room, t.admin) {
        (Some(r), _) => Some(
            tessera::ids::RoomId::parse(r)
                .map_err(|e| anyhow::anyhow!("--room: {e}"))?
                .to_string(),
        ),
        (None, true) => None,
        (None, false) => anyhow::bail!("--room is required (or --admin for every room)"),
    };
    if let Some(n) = &t.name {
        if n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
            anyhow::bail!("--name: 1 to 64 printable characters");
        }
    }
    let ttl = tessera::auth::parse_ttl(&t.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let now = tessera::auth::unix_now();
    let claims = Claims {
        sub: t
            .identity
            .clone()
            .or_else(|| t.name.clone())
            .unwrap_or_else(|| if t.admin { "admin" } else { "participant" }.into()),
        name: t.name.clone(),
        room: room.clone(),
        iat: now,
        exp: now + ttl.as_secs(),
        grants: Grants {
            join: room.is_some() && !t.watch,
            publish: !t.no_publish && !t.watch,
            subscribe: !t.no_subscribe,
            moderator: t.moderator,
            record: t.record,
            admin: t.admin,
        },
    };
    let token = config
        .access()
        .issue(&claims)
        .ok_or_else(|| anyhow::anyhow!("signing failed"))?;
    let scheme = config.scheme();
    println!(
        "# {} token for {}, expires in {} s",
        if t.admin {
            "admin"
        } else if t.watch {
            "watch"
        } else {
            "join"
        },
        room.as_deref().unwrap_or("every room"),
        ttl.as_secs()
    );
    if let Some(r) = &room {
        println!(
            "# web client: {scheme}://{}/?room={r}&token=…",
            config.listen
        );
    }
    println!("{token}");
    Ok(())
}

fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = Config::load(cli)?;
    let layouts = match &config.layouts_dir {
        Some(dir) => LayoutSet::load_dir(dir)?,
        None => LayoutSet::builtin(),
    };
    if layouts.get(&config.default_layout).is_none() {
        anyhow::bail!(
            "config `default_layout`: unknown layout `{}` (known: {})",
            config.default_layout,
            layouts.names().join(", ")
        );
    }
    if layouts.get(&config.presentation.layout).is_none() {
        anyhow::bail!(
            "config `presentation.layout`: unknown layout `{}` (known: {})",
            config.presentation.layout,
            layouts.names().join(", ")
        );
    }
    for (field, name) in std::iter::once(("live.layout", &config.live.layout)).chain(
        config.rooms.iter().filter_map(|r| {
            r.audience_layout
                .as_ref()
                .map(|l| ("rooms.audience_layout", l))
        }),
    ) {
        match layouts.get(name) {
            None => anyhow::bail!(
                "config `{field}`: unknown layout `{name}` (known: {})",
                layouts.names().join(", ")
            ),
            Some(l) if !l.shared() => anyhow::bail!(
                "config `{field}`: layout `{name}` cuts each viewer out of their picture; the audience view needs a shared canvas (e.g. `grid-shared`)"
            ),
            Some(_) => {}
        }
    }
    // A bad certificate or key stops the start here, before anything listens.
    tessera::signaling::tls::server_config(&config)?;
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        say(&format!("Tessera is listening on {}://{addr}", config.scheme()));
        tracing::info!(media_ip = %config.media_ip, layouts = ?layouts.names(), "open http://{addr} in a browser to join a room");
        let rooms = Arc::new(Rooms::new(RoomSettings { config: config.clone(), layouts }));
        let sip = match config.sip_listen {
            Some(sip_addr) => {
                let sip = tessera::sip::start(sip_addr, Arc::new(config.clone()), rooms.clone())
                    .await
                    .context("starting SIP (`--sip-listen off` disables it)")?;
                say(&format!("Tessera SIP is listening on sip:{} (udp, tcp)", sip.addr));
                if let Some(tls) = sip.tls_addr {
                    say(&format!("Tessera SIP is listening on sips:{tls} (tls)"));
                }
                Some(sip)
            }
            None => None,
        };
        let cluster = match &config.redis_url {
            Some(url) => {
                let public_url = config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("{}://{addr}", config.scheme()));
                let c = tessera::cluster::Cluster::start(
                    Arc::new(config.clone()),
                    rooms.clone(),
                    public_url,
                    sip.as_ref().map(|s| s.contact().to_string()),
                )
                .context("starting cluster mode")?;
                if let Some(s) = &sip {
                    s.set_cluster(c.clone());
                }
                say(&format!(
                    "Cluster mode: node {} at {} on Redis {}",
                    c.me(),
                    c.public_url(),
                    redact_url(url)
                ));
                Some(c)
            }
            None => None,
        };
        if config.api_secret.is_some() {
            say("Access control is on: joins need a token (`tessera token`), the API an admin credential");
        } else {
            say("Open mode (no API secret): anyone who can reach the listeners may join rooms and use the API; for loopback use only");
        }
        // SIGINT, a second SIGTERM, or a finished drain stop the node; then callers get
        // their BYE and the node leaves the cluster (record and claims deleted, so the next
        // join to one of its rooms is placed elsewhere at once) before the rooms stop.
        let drain_deadline = std::time::Duration::from_secs(config.cluster.drain_deadline_s.into());
        let (stop_rooms, stop_cluster) = (rooms.clone(), cluster.clone());
        let stop = async move {
            wait_for_stop(&stop_rooms, stop_cluster.is_some(), drain_deadline).await;
            if let Some(sip) = &sip {
                sip.shutdown().await;
            }
            if let Some(c) = &stop_cluster {
                c.leave().await;
            }
        };
        tessera::signaling::serve_node(listener, config, rooms, cluster, stop).await?;
        Ok(())
    })
}

/// A line on stdout for whoever started us; a closed stdout is not a reason to stop.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Raises the soft limit on open files to the hard limit, so that `[http] max_connections`
/// and the media sockets, not a 1,024 default, are what bound the server.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = old, to = lim.rlim_max, "raised the open-file limit");
            }
        }
    }
}

/// Waits until the node should stop: SIGINT at once; SIGTERM at once for a single node,
/// while in a cluster the first SIGTERM drains (no new rooms here; running ones go on) and a
/// second stops at once; and a drain (SIGTERM or `POST /api/admin/drain`) stops it when its
/// rooms have emptied or its deadline has passed.
async fn wait_for_stop(rooms: &Rooms, drain_on_term: bool, deadline: std::time::Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    let mut check = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut terms = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => {
                terms += 1;
                if !drain_on_term || terms > 1 {
                    return;
                }
                rooms.begin_drain(deadline);
                say(&format!(
                    "SIGTERM: draining ({} rooms running; SIGTERM again to stop now)",
                    rooms.list().len()
                ));
            }
            _ = check.tick() => {
                if rooms.drained(std::time::Instant::now()) {
                    let left = rooms.list().len();
                    if left == 0 {
                        tracing::info!("drained: no room left, stopping");
                    } else {
                        tracing::warn!(rooms = left, "drain deadline passed: stopping the rooms still running");
                    }
                    return;
                }
            }
        }
    }
}

/// A Redis URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
