//! `kairos token …`: create, list and revoke API tokens, through a server or (for the first
//! admin token) directly in a data directory's store.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use kairos_core::auth::{Principal, Role, parse_lifetime};
use kairos_runtime::{SystemClock, TokenRequest, TokenService};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{ConnArgs, TokenCmd};
use crate::client::{Client, urlencode};
use crate::store_url::StoreUrl;
use crate::table;

pub async fn run(conn: &ConnArgs, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            namespaces,
            expires,
            data_dir,
            store,
        } => {
            let namespaces = if namespaces.is_empty() {
                vec!["*".to_owned()]
            } else {
                namespaces
            };
            let offline = match (data_dir, store) {
                (Some(dir), _) => Some(StoreUrl::Sqlite { dir }),
                (None, Some(url)) => Some(StoreUrl::parse(&url)?),
                (None, None) => None,
            };
            let created = match offline {
                Some(store) => create_offline(&store, &name, &role, namespaces, expires).await?,
                None => {
                    let body = json!({"name": name, "role": role, "namespaces": namespaces,
                        "expires_in": expires});
                    Client::connect(conn)?
                        .json::<Value>(Method::POST, "/api/v1/tokens", Some(&body))
                        .await?
                }
            };
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
                return Ok(());
            }
            // The secret alone on standard output (`kairos token create … > file`), the rest
            // for people on standard error.
            eprintln!(
                "token `{}` created: role {}, namespaces {}{}; its secret is shown only now:",
                created["name"].as_str().unwrap_or_default(),
                created["role"].as_str().unwrap_or_default(),
                list(&created["namespaces"]),
                match created["expires_at"].as_str() {
                    Some(at) => format!(", expires {at}"),
                    None => String::new(),
                }
            );
            println!("{}", created["secret"].as_str().unwrap_or_default());
            Ok(())
        }
        TokenCmd::Ls => {
            let tokens: Vec<Value> = Client::connect(conn)?
                .json(Method::GET, "/api/v1/tokens", None)
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t["name"].as_str().unwrap_or_default().to_owned(),
                        t["role"].as_str().unwrap_or_default().to_owned(),
                        list(&t["namespaces"]),
                        super::short_time(&t["created_at"]),
                        t["created_by"].as_str().unwrap_or_default().to_owned(),
                        super::short_time(&t["expires_at"]),
                    ]
                })
                .collect();
            table::print(
                &["NAME", "ROLE", "NAMESPACES", "CREATED", "BY", "EXPIRES"],
                &rows,
            );
            Ok(())
        }
        TokenCmd::Revoke { name } => {
            let revoked: Value = Client::connect(conn)?
                .json(
                    Method::DELETE,
                    &format!("/api/v1/tokens/{}", urlencode(&name)),
                    None,
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&revoked)?);
            } else {
                println!("token `{name}` revoked");
            }
            Ok(())
        }
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Creates a token directly in a store (for SQLite, the server must not be running on it), as
/// the API would answer it.
async fn create_offline(
    url: &StoreUrl,
    name: &str,
    role: &str,
    namespaces: Vec<String>,
    expires: Option<String>,
) -> anyhow::Result<Value> {
    let role: Role = role.parse().map_err(|e| anyhow!("--role: {e}"))?;
    let expires_in = expires
        .as_deref()
        .map(parse_lifetime)
        .transpose()
        .map_err(|e| anyhow!("--expires: {e}"))?;
    let store = url.open().await.map_err(|e| match url {
        StoreUrl::Sqlite { .. } => {
            anyhow!("{e}; stop the server, or create the token through it with an admin token")
        }
        StoreUrl::Postgres { .. } => e,
    })?;
    let tokens = TokenService::new(store, Arc::new(SystemClock));
    let created = tokens
        .create(
            &Principal::offline(),
            TokenRequest {
                name: name.to_owned(),
                role,
                namespaces,
                expires_in,
            },
        )
        .await;
    let created = created.map_err(|e| match e {
        kairos_runtime::TokenError::Invalid(errors) => anyhow!("{errors}"),
        other => anyhow!("{other}"),
    })?;
    let token = kairos_api::tokens::NewTokenDto {
        token: created.token.into(),
        secret: created.secret,
    };
    serde_json::to_value(token).context("token to JSON")
}
