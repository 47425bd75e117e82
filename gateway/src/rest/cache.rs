//! The schema cache: the tables, views and functions of the exposed schemas, as
//! the catalog describes them. Every identifier the gateway writes into SQL comes
//! from here, never from request text. Type names are read with an empty
//! `search_path`, so they come schema-qualified where they need to be.

use std::collections::HashMap;
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column: `integer`, `text[]`, `public.vector(3)`.
    pub type_name: String,
    pub nullable: bool,
    pub has_default: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// A view, a materialized view, a foreign table: not a plain table.
    pub is_view: bool,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Empty for an unnamed argument.
    pub name: String,
    pub type_name: String,
    pub has_default: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// `void`: 204, no body.
    Void,
    /// One value (a scalar, an array, a json document).
    Scalar,
    /// One row of a composite type: an object.
    Row,
    /// `SETOF`/`TABLE` of rows: an array, which filters and order apply to.
    Set,
    /// `SETOF` a scalar type: an array of values.
    SetOfScalar,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub args: Vec<Arg>,
    pub returns: Returns,
    /// The columns of the rows it returns ([`Returns::Row`], [`Returns::Set`]).
    pub columns: Vec<Column>,
    /// `VOLATILE`: runs read-write on POST; any other function runs read-only,
    /// and every function runs read-only on GET and HEAD.
    pub volatile: bool,
}

impl Function {
    /// Whether named arguments `given` call this overload: every name is an
    /// argument, every argument left out has a default.
    pub fn accepts(&self, given: &[&str]) -> bool {
        given.iter().all(|g| self.args.iter().any(|a| a.name == *g))
            && self
                .args
                .iter()
                .all(|a| a.has_default || given.contains(&a.name.as_str()))
    }
}

#[derive(Debug, Default)]
pub struct SchemaCache {
    pub schemas: Vec<String>,
    tables: HashMap<(String, String), Table>,
    functions: HashMap<(String, String), Vec<Function>>,
}

impl SchemaCache {
    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.functions
            .get(&(schema.to_string(), name.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    pub fn function_count(&self) -> usize {
        self.functions.values().map(Vec::len).sum()
    }

    /// Reads the catalog for `schemas` on a session of its own.
    pub async fn load(
        client: &Client,
        schemas: &[String],
    ) -> Result<SchemaCache, tokio_postgres::Error> {
        client.batch_execute("SET search_path = ''").await?;
        let mut cache = SchemaCache {
            schemas: schemas.to_vec(),
            ..Default::default()
        };
        let rows = client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, a.attname::text, \
                        format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, a.atthasdef, \
                        coalesce(a.attnum = ANY(i.indkey::int2[]), false) \
                   FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                   LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
                  WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                  ORDER BY n.nspname, c.relname, a.attnum",
                &[&schemas],
            )
            .await?;
        for row in rows {
            let key: (String, String) = (row.get(0), row.get(1));
            let kind: String = row.get(2);
            let table = cache.tables.entry(key.clone()).or_insert_with(|| Table {
                schema: key.0.clone(),
                name: key.1.clone(),
                columns: Vec::new(),
                primary_key: Vec::new(),
                is_view: kind != "r" && kind != "p",
            });
            let name: String = row.get(3);
            if row.get::<_, bool>(7) {
                table.primary_key.push(name.clone());
            }
            table.columns.push(Column {
                name,
                type_name: row.get(4),
                nullable: row.get(5),
                has_default: row.get(6),
            });
        }
        let rows = client
            .query(
                "SELECT n.nspname::text, p.proname::text, p.proretset, p.provolatile = 'v', \
                        p.prorettype = 'void'::regtype, \
                        rt.typtype = 'c' OR (p.prorettype = 'record'::regtype AND p.proallargtypes IS NOT NULL), \
                        p.pronargdefaults::int, \
                        coalesce((SELECT array_agg(coalesce(p.proargnames[o::int], '') ORDER BY o) \
                           FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY u(t, o) \
                          WHERE coalesce(p.proargmodes[o::int], 'i') IN ('i', 'b', 'v')), '{}'), \
                        coalesce((SELECT array_agg(format_type(t, NULL) ORDER BY o) \
                           FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY u(t, o) \
                          WHERE coalesce(p.proargmodes[o::int], 'i') IN ('i', 'b', 'v')), '{}'), \
                        coalesce((SELECT array_agg(p.proargnames[o::int] ORDER BY o) \
                           FROM unnest(p.proallargtypes) WITH ORDINALITY u(t, o) \
                          WHERE p.proargmodes[o::int] IN ('o', 'b', 't')), \
                          (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
                            WHERE a.attrelid = rt.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '{}'), \
                        coalesce((SELECT array_agg(format_type(t, NULL) ORDER BY o) \
                           FROM unnest(p.proallargtypes) WITH ORDINALITY u(t, o) \
                          WHERE p.proargmodes[o::int] IN ('o', 'b', 't')), \
                          (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FROM pg_attribute a \
                            WHERE a.attrelid = rt.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '{}') \
                   FROM pg_proc p \
                   JOIN pg_namespace n ON n.oid = p.pronamespace \
                   JOIN pg_type rt ON rt.oid = p.prorettype \
                  WHERE n.nspname = ANY($1) AND p.prokind = 'f'",
                &[&schemas],
            )
            .await?;
        for row in rows {
            let names: Vec<String> = row.get(7);
            let types: Vec<String> = row.get(8);
            let defaults = row.get::<_, i32>(6) as usize;
            let first_default = names.len().saturating_sub(defaults);
            let args = names
                .into_iter()
                .zip(types)
                .enumerate()
                .map(|(i, (name, type_name))| Arg {
                    name,
                    type_name,
                    has_default: i >= first_default,
                })
                .collect();
            let (set, void, row_type) = (row.get(2), row.get(4), row.get(5));
            let returns = match (set, void, row_type) {
                (true, _, true) => Returns::Set,
                (true, _, false) => Returns::SetOfScalar,
                (_, true, _) => Returns::Void,
                (_, _, true) => Returns::Row,
                _ => Returns::Scalar,
            };
            let out_names: Vec<String> = row.get(9);
            let out_types: Vec<String> = row.get(10);
            let columns = out_names
                .into_iter()
                .zip(out_types)
                .map(|(name, type_name)| Column {
                    name,
                    type_name,
                    nullable: true,
                    has_default: false,
                })
                .collect();
            let f = Function {
                schema: row.get(0),
                name: row.get(1),
                args,
                returns,
                columns,
                volatile: row.get(3),
            };
            cache
                .functions
                .entry((f.schema.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(args: &[(&str, bool)]) -> Function {
        Function {
            schema: "public".into(),
            name: "f".into(),
            args: args
                .iter()
                .map(|(n, d)| Arg {
                    name: n.to_string(),
                    type_name: "integer".into(),
                    has_default: *d,
                })
                .collect(),
            returns: Returns::Scalar,
            columns: vec![],
            volatile: true,
        }
    }

    #[test]
    fn overloads_are_chosen_by_argument_names() {
        let two = f(&[("a", false), ("b", true)]);
        assert!(two.accepts(&["a"]));
        assert!(two.accepts(&["a", "b"]));
        assert!(!two.accepts(&["b"]));
        assert!(!two.accepts(&["a", "c"]));
        assert!(f(&[]).accepts(&[]));
    }
}
