-- Every object a database's schemas hold, one line each, in a form that does not
-- depend on OIDs or creation order: what the upgrade test compares between a
-- database upgraded from the previous release and a fresh install. Covers
-- schemas, functions (whole definitions), tables and views with their columns,
-- constraints, indexes, triggers, policies, sequences, types, grants, comments,
-- the extension's members and dump configuration, publications, event triggers
-- and roles. Column order counts: it is what `SELECT *` and row types see.
WITH nsp AS (
    SELECT oid, nspname FROM pg_namespace
     WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'
),
rel AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relacl, c.relrowsecurity,
           c.relforcerowsecurity, c.relpersistence, c.reloptions,
           quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
      FROM pg_class c JOIN nsp n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
)
SELECT line FROM (
    SELECT format('schema %I owner %s acl %s comment %s', n.nspname,
                  pg_get_userbyid(s.nspowner), s.nspacl, obj_description(n.oid, 'pg_namespace'))
      FROM nsp n JOIN pg_namespace s ON s.oid = n.oid
    UNION ALL
    SELECT format('function %s owner %s acl %s comment %s%s%s', p.oid::regprocedure,
                  pg_get_userbyid(p.proowner), p.proacl, obj_description(p.oid, 'pg_proc'),
                  E'\n', CASE WHEN p.prokind IN ('a') THEN 'aggregate'
                              ELSE pg_get_functiondef(p.oid) END)
      FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace
    UNION ALL
    SELECT format('relation %s kind %s owner %s acl %s rls %s force %s persistence %s options %s comment %s',
                  r.name, r.relkind, pg_get_userbyid(c.relowner), r.relacl, r.relrowsecurity,
                  r.relforcerowsecurity, r.relpersistence, r.reloptions, obj_description(r.oid, 'pg_class'))
      FROM rel r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    SELECT format('columns %s: %s', r.name, string_agg(
               format('%I %s%s%s%s%s%s acl %s comment %s', a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                      CASE WHEN a.atthasdef THEN ' default ' || pg_get_expr(d.adbin, d.adrelid) ELSE '' END,
                      CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END,
                      CASE WHEN a.attgenerated <> '' THEN ' generated ' || a.attgenerated::text ELSE '' END,
                      CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                           THEN ' collate ' || a.attcollation::regcollation ELSE '' END,
                      a.attacl, col_description(r.oid, a.attnum)),
               ', ' ORDER BY a.attnum))
      FROM rel r
      JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     GROUP BY r.name, r.oid
    UNION ALL
    SELECT format('constraint %s %I %s', r.name, co.conname, pg_get_constraintdef(co.oid))
      FROM pg_constraint co JOIN rel r ON r.oid = co.conrelid
    UNION ALL
    SELECT format('domain constraint %s %I %s', co.contypid::regtype, co.conname, pg_get_constraintdef(co.oid))
      FROM pg_constraint co JOIN pg_type t ON t.oid = co.contypid JOIN nsp n ON n.oid = t.typnamespace
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM pg_index i JOIN rel r ON r.oid = i.indrelid
    UNION ALL
    SELECT format('trigger %s %s enabled %s', r.name, pg_get_triggerdef(tg.oid), tg.tgenabled)
      FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid WHERE NOT tg.tgisinternal
    UNION ALL
    SELECT format('policy %s %I %s permissive %s roles %s using %s check %s', r.name, po.polname,
                  po.polcmd, po.polpermissive,
                  (SELECT string_agg(CASE WHEN x = 0 THEN 'public' ELSE pg_get_userbyid(x) END, ',' ORDER BY 1)
                     FROM unnest(po.polroles) x),
                  pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid))
      FROM pg_policy po JOIN rel r ON r.oid = po.polrelid
    UNION ALL
    SELECT format('rule %s %s', r.name, pg_get_ruledef(ru.oid))
      FROM pg_rewrite ru JOIN rel r ON r.oid = ru.ev_class WHERE ru.rulename <> '_RETURN'
    UNION ALL
    SELECT format('view %s %s', r.name, pg_get_viewdef(r.oid))
      FROM rel r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s start %s inc %s min %s max %s cache %s cycle %s owned by %s', r.name,
                  s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                  s.seqcycle, pg_get_serial_sequence_owner.owner)
      FROM pg_sequence s JOIN rel r ON r.oid = s.seqrelid
      LEFT JOIN LATERAL (
          SELECT d.refobjid::regclass || '.' || a.attname AS owner
            FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
           WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i')
             AND d.refclassid = 'pg_class'::regclass
      ) pg_get_serial_sequence_owner ON true
    UNION ALL
    SELECT format('type %s kind %s owner %s acl %s comment %s%s', t.oid::regtype, t.typtype,
                  pg_get_userbyid(t.typowner), t.typacl, obj_description(t.oid, 'pg_type'),
                  CASE t.typtype
                      WHEN 'e' THEN ' labels ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                                      FROM pg_enum e WHERE e.enumtypid = t.oid)
                      WHEN 'd' THEN ' base ' || format_type(t.typbasetype, t.typtypmod)
                                    || CASE WHEN t.typnotnull THEN ' not null' ELSE '' END
                                    || coalesce(' default ' || t.typdefault, '')
                      ELSE '' END)
      FROM pg_type t JOIN nsp n ON n.oid = t.typnamespace
     WHERE t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND EXISTS (
           SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c'))
    UNION ALL
    SELECT format('operator %s', o.oid::regoperator)
      FROM pg_operator o JOIN nsp n ON n.oid = o.oprnamespace
    UNION ALL
    SELECT format('extension %s version %s schema %s config %s condition %s', e.extname, e.extversion,
                  e.extnamespace::regnamespace,
                  (SELECT string_agg(x::regclass::text, ',' ORDER BY x::regclass::text) FROM unnest(e.extconfig) x),
                  e.extcondition)
      FROM pg_extension e
    UNION ALL
    SELECT format('extension %s requires %s', e.extname, r.extname)
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.objid JOIN pg_extension r ON r.oid = d.refobjid
     WHERE d.classid = 'pg_extension'::regclass AND d.refclassid = 'pg_extension'::regclass
    UNION ALL
    SELECT format('member of %s: %s', e.extname, pg_describe_object(d.classid, d.objid, d.objsubid))
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    UNION ALL
    SELECT format('event trigger %I on %s function %s enabled %s tags %s', evtname, evtevent,
                  evtfoid::regprocedure, evtenabled, evttags)
      FROM pg_event_trigger
    UNION ALL
    SELECT format('publication %I all %s ins %s upd %s del %s trunc %s', pubname, puballtables,
                  pubinsert, pubupdate, pubdelete, pubtruncate)
      FROM pg_publication
    UNION ALL
    SELECT format('publication table %I %s', p.pubname, pr.prrelid::regclass)
      FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
    UNION ALL
    SELECT format('default acl %s %s %s %s', pg_get_userbyid(defaclrole), defaclnamespace::regnamespace,
                  defaclobjtype, defaclacl)
      FROM pg_default_acl
    UNION ALL
    SELECT format('role %I login %s inherit %s bypassrls %s createrole %s createdb %s super %s member of %s',
                  r.rolname, r.rolcanlogin, r.rolinherit, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
                  r.rolsuper,
                  (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname)
                     FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid))
      FROM pg_roles r WHERE r.rolname NOT LIKE 'pg\_%'
) all_objects(line)
ORDER BY line;
