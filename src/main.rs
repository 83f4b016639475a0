//! `tessera`: flags/config, logging, then `signaling::serve` until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use tessera::config::{BenchCommand, Cli, Command, Config};
use tessera::layout::LayoutSet;
use tessera::room::{RoomSettings, Rooms};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn,rsipstack=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tessera::room::tune_allocator();
    let cli = Cli::parse();
    if let Some(Command::Bench {
        what: BenchCommand::Room(args),
    }) = &cli.command
    {
        if let Some(dir) = &args.write_inputs {
            tessera::bench::write_inputs(args, dir)?;
            return Ok(());
        }
        let report = tessera::bench::run(args)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            tessera::bench::print_table(&report);
        }
        return Ok(());
    }
    let config = Config::load(&cli)?;
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
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        say(&format!("Tessera is listening on http://{addr}"));
        tracing::info!(media_ip = %config.media_ip, layouts = ?layouts.names(), "open http://{addr} in a browser to join a room");
        let rooms = Arc::new(Rooms::new(RoomSettings { config: config.clone(), layouts }));
        let sip = match config.sip_listen {
            Some(sip_addr) => {
                let sip = tessera::sip::start(sip_addr, Arc::new(config.clone()), rooms.clone())
                    .await
                    .context("starting SIP (`--sip-listen off` disables it)")?;
                say(&format!("Tessera SIP is listening on sip:{} (udp, tcp)", sip.addr));
                Some(sip)
            }
            None => None,
        };
        // On SIGINT/SIGTERM, callers get their BYE before the rooms stop.
        let stop = async move {
            shutdown_signal().await;
            if let Some(sip) = &sip {
                sip.shutdown().await;
            }
        };
        tessera::signaling::serve(listener, config, rooms, stop).await?;
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
