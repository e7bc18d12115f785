//! Listening on a channel of the user's own (`kairos event listen`): a trigger function in the
//! user's database calls `pg_notify('channel', payload)`, and each notification is relayed to
//! Kairos as an event.
//!
//! `LISTEN/NOTIFY` delivers to the sessions listening when the notifying transaction commits,
//! nothing more: a notification sent while no listener is connected is not kept anywhere. The
//! listener reports a lost connection as an error so the caller can say so and listen again.

use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Socket};

use crate::connect::redact;

/// Checks a channel name: a plain identifier, `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes.
pub fn validate_channel(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a channel name Kairos listens on: 1 to 63 ASCII letters, digits and `_`, not starting with a digit"
        ))
    }
}

/// A connection that `LISTEN`s on one channel.
pub struct ChannelListener {
    // Kept: dropping the client would end the session.
    _client: Client,
    connection: Connection<Socket, NoTlsStream>,
}

impl ChannelListener {
    /// Connects to `url` and listens on `channel`. `Err` says why (the URL's password is not
    /// in it).
    pub async fn connect(url: &str, channel: &str) -> Result<Self, String> {
        validate_channel(channel)?;
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid PostgreSQL URL {}: {e}", redact(url)))?;
        let (client, mut connection) = pg
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
        // Quoted, so the name is the one `pg_notify('name', …)` uses, case and all (the name
        // is checked above: nothing to escape).
        let sql = format!("LISTEN \"{channel}\"");
        {
            let listen = client.batch_execute(&sql);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    done = &mut listen => {
                        done.map_err(|e| format!("cannot LISTEN on `{channel}`: {e}"))?;
                        break;
                    }
                    message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(format!("connection lost: {e}")),
                        None => return Err("the server closed the connection".into()),
                    },
                }
            }
        }
        Ok(Self {
            _client: client,
            connection,
        })
    }

    /// The next notification's payload. `Err` when the connection is lost (notifications sent
    /// until the caller listens again are not delivered).
    pub async fn next(&mut self) -> Result<String, String> {
        loop {
            match std::future::poll_fn(|cx| self.connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => return Ok(n.payload().to_owned()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection lost: {e}")),
                None => return Err("the server closed the connection".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for ok in ["orders", "_x", "Orders_2", &"a".repeat(63)] {
            assert!(validate_channel(ok).is_ok(), "{ok}");
        }
        for bad in ["", "2x", "a-b", "a\"b", "a b", &"a".repeat(64)] {
            assert!(validate_channel(bad).is_err(), "{bad}");
        }
    }
}
