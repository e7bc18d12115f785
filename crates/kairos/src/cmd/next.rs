//! `kairos next EXPR`: future fire times of a cron expression, without a server.

use anyhow::bail;
use jiff::Timestamp;
use kairos_core::trigger::CronSchedule;
use serde_json::json;

pub struct NextArgs {
    pub expr: String,
    pub tz: Option<String>,
    pub from: Option<String>,
    pub count: usize,
    pub json: bool,
}

/// Formats an instant as RFC 3339 with the offset of `zone`.
fn rfc3339_in(t: Timestamp, schedule: &CronSchedule) -> String {
    t.to_zoned(schedule.time_zone().clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// The lines `kairos next` prints (one per fire time, each starting with the timestamp).
pub fn lines(
    args: &NextArgs,
    now: Timestamp,
) -> anyhow::Result<Vec<(String, Timestamp, Option<String>)>> {
    if args.count == 0 || args.count > 10_000 {
        bail!("-n: must be between 1 and 10000");
    }
    let schedule =
        CronSchedule::parse(&args.expr, args.tz.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let from = match &args.from {
        None => now,
        Some(s) => {
            kairos_core::job::parse_instant(s).map_err(|e| anyhow::anyhow!("--from: {e}"))?
        }
    };
    let mut out = Vec::with_capacity(args.count);
    let mut cursor = from;
    while out.len() < args.count {
        let Some(next) = schedule.next_after(cursor) else {
            break;
        };
        let note = schedule.dst_note(next).map(|n| n.to_string());
        out.push((rfc3339_in(next, &schedule), next, note));
        cursor = next;
    }
    Ok(out)
}

/// The start instant as given (or now).
fn from_text(args: &NextArgs, now: Timestamp) -> String {
    args.from.clone().unwrap_or_else(|| now.to_string())
}

pub fn run(args: NextArgs, now: Timestamp) -> anyhow::Result<()> {
    let lines = lines(&args, now)?;
    // Fewer fire times than asked: none is left within the years Kairos computes. Saying
    // nothing would look like success.
    let last = lines.last().map(|l| l.0.clone());
    let end_note = format!(
        "no fire times after {}",
        last.unwrap_or_else(|| from_text(&args, now))
    );
    let horizon = kairos_core::trigger::CRON_LAST_YEAR;
    if lines.is_empty() {
        bail!("{end_note}: cron fire times are computed up to the year {horizon}");
    }
    if lines.len() < args.count {
        eprintln!(
            "note: {end_note} up to the year {horizon} (only {} of {} shown)",
            lines.len(),
            args.count
        );
    }
    if args.json {
        let items: Vec<_> = lines
            .iter()
            .map(|(local, utc, note)| json!({ "at": local, "utc": utc.to_string(), "note": note }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    for (local, _, note) in lines {
        match note {
            Some(note) => println!("{local} {note}"),
            None => println!("{local}"),
        }
    }
    Ok(())
}
