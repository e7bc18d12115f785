//! The `kairos` binary: `kairos server` and the CLI.

use std::process::ExitCode;

use clap::Parser;
use kairos::cli::{Cli, Command};
use kairos::client::Client;
use kairos::cmd::{alert, apply, audit, calendar, event, job, next, node, run, store, token};
use kairos::config::{ServerConfig, ServerFlags};

/// mimalloc rather than glibc's malloc: a node allocates and frees small objects on every thread
/// for each run it starts (see docs/BENCHMARKS.md, W2).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The reaper a server starts beside itself (see `kairos_exec::reaper`): not a command.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(kairos::server::REAPER_MODE))
    {
        kairos_exec::reaper::run();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server {
            data_dir,
            store,
            listen,
            config,
            node_name,
            log_format,
            auth,
            insecure_no_auth,
            tls_cert,
            tls_key,
        } => {
            let config = ServerConfig::resolve(ServerFlags {
                config,
                data_dir,
                store,
                listen,
                node_name,
                log_format,
                auth,
                insecure_no_auth,
                tls_cert,
                tls_key,
            })?;
            kairos::init_logging(config.log_json);
            kairos::server::use_reaper();
            kairos::server::serve(config, kairos_exec::FunctionRegistry::new()).await
        }
        Command::Next {
            expr,
            tz,
            from,
            count,
            json,
            exclude,
            only,
        } => next::run(
            next::NextArgs {
                expr,
                tz,
                from,
                count,
                json,
                exclude,
                only,
            },
            kairos::wall_clock_now(),
        ),
        Command::Job { client, command } => {
            let c = Client::connect(&client.conn)?;
            job::run(&c, &client.namespace, client.conn.json, command).await
        }
        Command::Calendar { client, command } => {
            let c = Client::connect(&client.conn)?;
            calendar::run(&c, &client.namespace, client.conn.json, command).await
        }
        Command::Run { client, command } => {
            let c = Client::connect(&client.conn)?;
            run::run(&c, &client.namespace, client.conn.json, command).await
        }
        Command::Token { conn, command } => token::run(&conn, command).await,
        Command::Event { conn, command } => {
            let c = Client::connect(&conn)?;
            event::run(&c, conn.json, command).await
        }
        Command::Audit { client, command } => {
            let c = Client::connect(&client.conn)?;
            audit::run(&c, &client.namespace, client.conn.json, command).await
        }
        Command::Alert { client, command } => {
            let c = Client::connect(&client.conn)?;
            alert::run(&c, &client.namespace, client.conn.json, command).await
        }
        Command::Store { command } => store::run(command).await,
        Command::Node { conn, command } => {
            let c = Client::connect(&conn)?;
            node::run(&c, conn.json, command).await
        }
        Command::Apply {
            client,
            file,
            prune,
            dry_run,
            watch,
        } => {
            let c = Client::connect(&client.conn)?;
            apply::run(
                &c,
                &client.namespace,
                client.conn.json,
                apply::ApplyArgs {
                    file,
                    prune,
                    dry_run,
                    watch,
                },
            )
            .await
        }
    }
}
