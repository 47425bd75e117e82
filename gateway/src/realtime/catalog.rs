//! What Realtime knows about the tables it serves: the published tables and
//! `spine.events`, their columns (name and `pg_type.typname`, as
//! `data.columns` carries them), primary keys, and how each role's visibility is
//! decided (`spine.realtime_visibility`). Read at start and again on PostgREST's
//! reload channel, which `spine.realtime_publish` notifies.

use serde::Deserialize;
use std::collections::HashMap;

/// How a role's visibility of a table's rows is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    All,
    None,
    /// Visible when one of these columns holds the subscriber's user id.
    Owner(Vec<String>),
    /// Evaluated by `spine.realtime_visible` as the subscriber; with a
    /// [`CacheKey`], a decision is kept until a table it depends on changes.
    Check(Option<CacheKey>),
}

/// What a cached decision depends on besides the subscriber's claims: these
/// columns of the row, and the current contents of these (published) tables.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKey {
    pub columns: Vec<String>,
    pub depends_on: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `"schema"."name"`, for `::regclass`.
    pub qualified: String,
    pub columns: Vec<(String, String)>,
    pub primary_key: Vec<String>,
    visibility: HashMap<String, Visibility>,
}

impl Table {
    pub fn visibility(&self, role: &str) -> &Visibility {
        self.visibility.get(role).unwrap_or(&Visibility::None)
    }

    pub fn column_type(&self, column: &str) -> Option<String> {
        self.columns
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, t)| t.clone())
    }

    /// `data.columns` of a message.
    pub fn columns_json(&self) -> serde_json::Value {
        self.columns
            .iter()
            .map(|(name, ty)| serde_json::json!({"name": name, "type": ty}))
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<(String, String), Table>,
}

#[derive(Deserialize)]
struct Row {
    schema: String,
    name: String,
    qualified: String,
    columns: Vec<(String, String)>,
    primary_key: Option<Vec<String>>,
    visibility: HashMap<String, RoleVisibility>,
}

#[derive(Deserialize)]
struct RoleVisibility {
    path: String,
    owner_columns: Option<Vec<String>>,
    cache_columns: Option<Vec<String>>,
    depends_on: Option<Vec<String>>,
}

const LOAD: &str = "
SELECT json_build_object(
  'schema', t.schema_name, 'name', t.table_name,
  'qualified', format('%I.%I', t.schema_name, t.table_name),
  'columns', (SELECT json_agg(json_build_array(a.attname, ty.typname) ORDER BY a.attnum)
                FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
               WHERE a.attrelid = x.rel AND a.attnum > 0 AND NOT a.attisdropped),
  'primary_key', (SELECT json_agg(a.attname ORDER BY a.attnum)
                    FROM pg_index i JOIN pg_attribute a
                      ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                   WHERE i.indrelid = x.rel AND i.indisprimary),
  'visibility', (SELECT json_object_agg(r.name, json_build_object('path', v.path, 'owner_columns', v.owner_columns,
                                                      'cache_columns', v.cache_columns, 'depends_on', v.depends_on))
                   FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(name)
                   CROSS JOIN LATERAL spine.realtime_visibility(x.rel, r.name) AS v))::text
  FROM (SELECT schema_name, table_name FROM spine.realtime_tables
        UNION SELECT 'spine', 'events') AS t
  CROSS JOIN LATERAL (SELECT to_regclass(format('%I.%I', t.schema_name, t.table_name)) AS rel) AS x
 WHERE x.rel IS NOT NULL";

/// `schema.table` (as `format('%I.%I')` writes it) into its two names.
fn split_qualified(q: &str) -> Option<(String, String)> {
    let unquote = |s: &str| {
        s.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .map(|s| s.replace("\"\"", "\""))
            .unwrap_or_else(|| s.to_string())
    };
    // A quoted name may hold a dot: split at the dot outside quotes.
    let mut quoted = false;
    for (i, c) in q.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => return Some((unquote(&q[..i]), unquote(&q[i + 1..]))),
            _ => {}
        }
    }
    None
}

impl Catalog {
    /// Tables whose cached decisions a change to `schema.name` invalidates.
    pub fn dependents(&self, schema: &str, name: &str) -> Vec<String> {
        self.tables
            .values()
            .filter(|t| {
                t.visibility.values().any(|v| match v {
                    Visibility::Check(Some(key)) => {
                        key.depends_on.iter().any(|(s, n)| s == schema && n == name)
                    }
                    _ => false,
                })
            })
            .map(|t| t.qualified.clone())
            .collect()
    }

    pub async fn load(client: &tokio_postgres::Client) -> anyhow::Result<Catalog> {
        let mut tables = HashMap::new();
        for row in client.query(LOAD, &[]).await? {
            let row: Row = serde_json::from_str(row.get::<_, &str>(0))?;
            let visibility = row
                .visibility
                .into_iter()
                .map(|(role, v)| {
                    let decided = match v.path.as_str() {
                        "all" => Visibility::All,
                        "owner" => Visibility::Owner(v.owner_columns.unwrap_or_default()),
                        "check" => Visibility::Check(v.cache_columns.map(|columns| {
                            CacheKey {
                                columns,
                                depends_on: v
                                    .depends_on
                                    .unwrap_or_default()
                                    .iter()
                                    .filter_map(|q| split_qualified(q))
                                    .collect(),
                            }
                        })),
                        _ => Visibility::None,
                    };
                    (role, decided)
                })
                .collect();
            tables.insert(
                (row.schema.clone(), row.name.clone()),
                Table {
                    schema: row.schema,
                    name: row.name,
                    qualified: row.qualified,
                    columns: row.columns,
                    primary_key: row.primary_key.unwrap_or_default(),
                    visibility,
                },
            );
        }
        Ok(Catalog { tables })
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    /// Tables a binding's `schema` / `table` (either may be `*`) names.
    pub fn matching<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a Table> + 'a {
        self.tables.values().filter(move |t| {
            (schema == "*" || t.schema == schema) && (table == "*" || t.name == table)
        })
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_split_outside_quotes() {
        assert_eq!(
            split_qualified("public.t"),
            Some(("public".into(), "t".into()))
        );
        assert_eq!(
            split_qualified("\"my.schema\".\"a \"\"b\"\"\""),
            Some(("my.schema".into(), "a \"b\"".into()))
        );
        assert_eq!(split_qualified("nodot"), None);
    }
}
