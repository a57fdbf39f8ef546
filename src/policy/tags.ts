/**
 * Command tags — the names Postgres gives its statements (`DROP TABLE`, `ALTER SYSTEM`, `TRUNCATE TABLE`; what psql
 * prints after a command, src/include/tcop/cmdtaglist.h) — computed from a raw parse tree. Firewall rules name the
 * statements they deny this way; an entry matches a tag equal to it or starting with it as whole words, so `DROP`
 * covers every `DROP …` and `DROP TABLE` only that one.
 *
 * A leaf module (no imports): config validation checks rule entries against {@link COMMAND_TAGS}.
 */

/** Every command tag of PostgreSQL 15-18 that a client's statement can have. */
export const COMMAND_TAGS: readonly string[] = `
ALTER ACCESS METHOD|ALTER AGGREGATE|ALTER CAST|ALTER COLLATION|ALTER CONSTRAINT|ALTER CONVERSION|ALTER DATABASE|
ALTER DEFAULT PRIVILEGES|ALTER DOMAIN|ALTER EVENT TRIGGER|ALTER EXTENSION|ALTER FOREIGN DATA WRAPPER|ALTER FOREIGN TABLE|
ALTER FUNCTION|ALTER INDEX|ALTER LANGUAGE|ALTER LARGE OBJECT|ALTER MATERIALIZED VIEW|ALTER OPERATOR|ALTER OPERATOR CLASS|
ALTER OPERATOR FAMILY|ALTER POLICY|ALTER PROCEDURE|ALTER PUBLICATION|ALTER ROLE|ALTER ROUTINE|ALTER RULE|ALTER SCHEMA|
ALTER SEQUENCE|ALTER SERVER|ALTER STATISTICS|ALTER SUBSCRIPTION|ALTER SYSTEM|ALTER TABLE|ALTER TABLESPACE|
ALTER TEXT SEARCH CONFIGURATION|ALTER TEXT SEARCH DICTIONARY|ALTER TEXT SEARCH PARSER|ALTER TEXT SEARCH TEMPLATE|
ALTER TRANSFORM|ALTER TRIGGER|ALTER TYPE|ALTER USER MAPPING|ALTER VIEW|ANALYZE|BEGIN|CALL|CHECKPOINT|CLOSE|CLOSE CURSOR|
CLOSE CURSOR ALL|CLUSTER|COMMENT|COMMIT|COMMIT PREPARED|COPY|COPY FROM|CREATE ACCESS METHOD|CREATE AGGREGATE|CREATE CAST|
CREATE COLLATION|CREATE CONSTRAINT|CREATE CONVERSION|CREATE DATABASE|CREATE DOMAIN|CREATE EVENT TRIGGER|CREATE EXTENSION|
CREATE FOREIGN DATA WRAPPER|CREATE FOREIGN TABLE|CREATE FUNCTION|CREATE INDEX|CREATE LANGUAGE|CREATE MATERIALIZED VIEW|
CREATE OPERATOR|CREATE OPERATOR CLASS|CREATE OPERATOR FAMILY|CREATE POLICY|CREATE PROCEDURE|CREATE PUBLICATION|CREATE ROLE|
CREATE ROUTINE|CREATE RULE|CREATE SCHEMA|CREATE SEQUENCE|CREATE SERVER|CREATE STATISTICS|CREATE SUBSCRIPTION|CREATE TABLE|
CREATE TABLE AS|CREATE TABLESPACE|CREATE TEXT SEARCH CONFIGURATION|CREATE TEXT SEARCH DICTIONARY|CREATE TEXT SEARCH PARSER|
CREATE TEXT SEARCH TEMPLATE|CREATE TRANSFORM|CREATE TRIGGER|CREATE TYPE|CREATE USER MAPPING|CREATE VIEW|DEALLOCATE|
DEALLOCATE ALL|DECLARE CURSOR|DELETE|DISCARD|DISCARD ALL|DISCARD PLANS|DISCARD SEQUENCES|DISCARD TEMP|DO|
DROP ACCESS METHOD|DROP AGGREGATE|DROP CAST|DROP COLLATION|DROP CONSTRAINT|DROP CONVERSION|DROP DATABASE|DROP DOMAIN|
DROP EVENT TRIGGER|DROP EXTENSION|DROP FOREIGN DATA WRAPPER|DROP FOREIGN TABLE|DROP FUNCTION|DROP INDEX|DROP LANGUAGE|
DROP MATERIALIZED VIEW|DROP OPERATOR|DROP OPERATOR CLASS|DROP OPERATOR FAMILY|DROP OWNED|DROP POLICY|DROP PROCEDURE|
DROP PUBLICATION|DROP ROLE|DROP ROUTINE|DROP RULE|DROP SCHEMA|DROP SEQUENCE|DROP SERVER|DROP STATISTICS|
DROP SUBSCRIPTION|DROP TABLE|DROP TABLESPACE|DROP TEXT SEARCH CONFIGURATION|DROP TEXT SEARCH DICTIONARY|
DROP TEXT SEARCH PARSER|DROP TEXT SEARCH TEMPLATE|DROP TRANSFORM|DROP TRIGGER|DROP TYPE|DROP USER MAPPING|DROP VIEW|
EXECUTE|EXPLAIN|FETCH|GRANT|GRANT ROLE|IMPORT FOREIGN SCHEMA|INSERT|LISTEN|LOAD|LOCK TABLE|MERGE|MOVE|NOTIFY|PREPARE|
PREPARE TRANSACTION|REASSIGN OWNED|REFRESH MATERIALIZED VIEW|REINDEX|RELEASE|RESET|REVOKE|REVOKE ROLE|ROLLBACK|
ROLLBACK PREPARED|SAVEPOINT|SECURITY LABEL|SELECT|SELECT FOR KEY SHARE|SELECT FOR NO KEY UPDATE|SELECT FOR SHARE|
SELECT FOR UPDATE|SELECT INTO|SET|SET CONSTRAINTS|SHOW|START TRANSACTION|TRUNCATE TABLE|UNLISTEN|UPDATE|VACUUM`
  .split("|")
  .map((t) => t.trim());

/** A rule entry as compared: upper case, single spaces. */
export function normalizeTag(entry: string): string {
  return entry.trim().replace(/\s+/g, " ").toUpperCase();
}

/** Whether `tag` is `entry` or starts with it as whole words (`entry` normalized). */
export function tagMatches(tag: string, entry: string): boolean {
  return tag === entry || (tag.startsWith(entry) && tag.charCodeAt(entry.length) === 0x20);
}

/** Whether a (normalized) rule entry names at least one command tag. */
export function knownTag(entry: string): boolean {
  return COMMAND_TAGS.some((t) => tagMatches(t, entry));
}

type Node = Record<string, any>;

/** `OBJECT_*` names whose words differ from their SQL spelling. */
const OBJECT_WORDS: Record<string, string> = {
  MATVIEW: "MATERIALIZED VIEW",
  FDW: "FOREIGN DATA WRAPPER",
  FOREIGN_SERVER: "SERVER",
  OPCLASS: "OPERATOR CLASS",
  OPFAMILY: "OPERATOR FAMILY",
  STATISTIC_EXT: "STATISTICS",
  TSPARSER: "TEXT SEARCH PARSER",
  TSDICTIONARY: "TEXT SEARCH DICTIONARY",
  TSTEMPLATE: "TEXT SEARCH TEMPLATE",
  TSCONFIGURATION: "TEXT SEARCH CONFIGURATION",
  LARGEOBJECT: "LARGE OBJECT",
  TABCONSTRAINT: "TABLE",
  DOMCONSTRAINT: "DOMAIN",
  COLUMN: "TABLE",
  ATTRIBUTE: "TYPE",
  USER_MAPPING: "USER MAPPING",
};

/** `OBJECT_FOREIGN_TABLE` → `FOREIGN TABLE`. */
function objectWords(objectType: unknown): string {
  const raw = String(objectType ?? "").replace(/^OBJECT_/, "");
  return OBJECT_WORDS[raw] ?? raw.replace(/_/g, " ");
}

/** Statement types whose tag is fixed. */
const FIXED: Record<string, string> = {
  InsertStmt: "INSERT", DeleteStmt: "DELETE", UpdateStmt: "UPDATE", MergeStmt: "MERGE", DeclareCursorStmt: "DECLARE CURSOR",
  CreateDomainStmt: "CREATE DOMAIN", CreateSchemaStmt: "CREATE SCHEMA", CreateStmt: "CREATE TABLE",
  CreateForeignTableStmt: "CREATE FOREIGN TABLE", CreateTableSpaceStmt: "CREATE TABLESPACE", DropTableSpaceStmt: "DROP TABLESPACE",
  AlterTableSpaceOptionsStmt: "ALTER TABLESPACE", AlterTableMoveAllStmt: "ALTER TABLE", CreateExtensionStmt: "CREATE EXTENSION",
  AlterExtensionStmt: "ALTER EXTENSION", AlterExtensionContentsStmt: "ALTER EXTENSION",
  CreateFdwStmt: "CREATE FOREIGN DATA WRAPPER", AlterFdwStmt: "ALTER FOREIGN DATA WRAPPER", CreateForeignServerStmt: "CREATE SERVER",
  AlterForeignServerStmt: "ALTER SERVER", CreateUserMappingStmt: "CREATE USER MAPPING", AlterUserMappingStmt: "ALTER USER MAPPING",
  DropUserMappingStmt: "DROP USER MAPPING", ImportForeignSchemaStmt: "IMPORT FOREIGN SCHEMA", TruncateStmt: "TRUNCATE TABLE",
  CommentStmt: "COMMENT", SecLabelStmt: "SECURITY LABEL", CopyStmt: "COPY", AlterDomainStmt: "ALTER DOMAIN",
  AlterDefaultPrivilegesStmt: "ALTER DEFAULT PRIVILEGES", CompositeTypeStmt: "CREATE TYPE", CreateEnumStmt: "CREATE TYPE",
  CreateRangeStmt: "CREATE TYPE", AlterEnumStmt: "ALTER TYPE", ViewStmt: "CREATE VIEW", IndexStmt: "CREATE INDEX",
  RuleStmt: "CREATE RULE", CreateSeqStmt: "CREATE SEQUENCE", AlterSeqStmt: "ALTER SEQUENCE", DoStmt: "DO",
  CreatedbStmt: "CREATE DATABASE", AlterDatabaseStmt: "ALTER DATABASE", AlterDatabaseSetStmt: "ALTER DATABASE",
  AlterDatabaseRefreshCollStmt: "ALTER DATABASE", DropdbStmt: "DROP DATABASE", NotifyStmt: "NOTIFY", ListenStmt: "LISTEN",
  UnlistenStmt: "UNLISTEN", LoadStmt: "LOAD", CallStmt: "CALL", ClusterStmt: "CLUSTER", ExplainStmt: "EXPLAIN",
  RefreshMatViewStmt: "REFRESH MATERIALIZED VIEW", AlterSystemStmt: "ALTER SYSTEM", VariableShowStmt: "SHOW",
  CreateTransformStmt: "CREATE TRANSFORM", CreateEventTrigStmt: "CREATE EVENT TRIGGER", AlterEventTrigStmt: "ALTER EVENT TRIGGER",
  CreatePLangStmt: "CREATE LANGUAGE", CreateRoleStmt: "CREATE ROLE", AlterRoleStmt: "ALTER ROLE", AlterRoleSetStmt: "ALTER ROLE",
  DropRoleStmt: "DROP ROLE", DropOwnedStmt: "DROP OWNED", ReassignOwnedStmt: "REASSIGN OWNED", LockStmt: "LOCK TABLE",
  ConstraintsSetStmt: "SET CONSTRAINTS", CheckPointStmt: "CHECKPOINT", ReindexStmt: "REINDEX",
  CreateConversionStmt: "CREATE CONVERSION", CreateCastStmt: "CREATE CAST", CreateOpClassStmt: "CREATE OPERATOR CLASS",
  CreateOpFamilyStmt: "CREATE OPERATOR FAMILY", AlterOpFamilyStmt: "ALTER OPERATOR FAMILY", AlterOperatorStmt: "ALTER OPERATOR",
  AlterTypeStmt: "ALTER TYPE", AlterTSDictionaryStmt: "ALTER TEXT SEARCH DICTIONARY",
  AlterTSConfigurationStmt: "ALTER TEXT SEARCH CONFIGURATION", CreatePolicyStmt: "CREATE POLICY", AlterPolicyStmt: "ALTER POLICY",
  CreateAmStmt: "CREATE ACCESS METHOD", CreatePublicationStmt: "CREATE PUBLICATION", AlterPublicationStmt: "ALTER PUBLICATION",
  CreateSubscriptionStmt: "CREATE SUBSCRIPTION", AlterSubscriptionStmt: "ALTER SUBSCRIPTION",
  DropSubscriptionStmt: "DROP SUBSCRIPTION", AlterCollationStmt: "ALTER COLLATION", PrepareStmt: "PREPARE", ExecuteStmt: "EXECUTE",
  CreateStatsStmt: "CREATE STATISTICS", AlterStatsStmt: "ALTER STATISTICS",
};

const TRANSACTION_TAGS: Record<string, string> = {
  TRANS_STMT_BEGIN: "BEGIN", TRANS_STMT_START: "START TRANSACTION", TRANS_STMT_COMMIT: "COMMIT", TRANS_STMT_ROLLBACK: "ROLLBACK",
  TRANS_STMT_SAVEPOINT: "SAVEPOINT", TRANS_STMT_RELEASE: "RELEASE", TRANS_STMT_ROLLBACK_TO: "ROLLBACK",
  TRANS_STMT_PREPARE: "PREPARE TRANSACTION", TRANS_STMT_COMMIT_PREPARED: "COMMIT PREPARED",
  TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
};

/** The command tag of one statement (`type`: its node's name in the tree, `InsertStmt`; `node`: its fields). */
export function commandTag(type: string, node: Node): string {
  const fixed = FIXED[type];
  if (fixed) return fixed;
  switch (type) {
    case "SelectStmt": {
      if (node.intoClause) return "SELECT INTO";
      const strength = (node.lockingClause as Node[] | undefined)?.[0]?.LockingClause?.strength as string | undefined;
      if (!strength) return "SELECT";
      return `SELECT ${strength.replace("LCS_", "").replace("FORNOKEYUPDATE", "FOR NO KEY UPDATE").replace("FORKEYSHARE", "FOR KEY SHARE").replace(/^FOR(?=[A-Z])/, "FOR ")}`;
    }
    case "TransactionStmt":
      return TRANSACTION_TAGS[node.kind as string] ?? "BEGIN";
    case "ClosePortalStmt":
      return node.portalname ? "CLOSE CURSOR" : "CLOSE CURSOR ALL";
    case "FetchStmt":
      return node.ismove ? "MOVE" : "FETCH";
    case "DropStmt":
      return `DROP ${objectWords(node.removeType)}`;
    case "RenameStmt":
      return `ALTER ${objectWords(node.renameType === "OBJECT_COLUMN" || node.renameType === "OBJECT_ATTRIBUTE" ? node.relationType : node.renameType)}`;
    case "AlterObjectDependsStmt":
    case "AlterObjectSchemaStmt":
    case "AlterOwnerStmt":
      return `ALTER ${objectWords(node.objectType)}`;
    case "AlterTableStmt":
      return `ALTER ${objectWords(node.objtype)}`;
    case "AlterFunctionStmt":
      return `ALTER ${objectWords(node.objtype)}`;
    case "GrantStmt":
      return node.is_grant ? "GRANT" : "REVOKE";
    case "GrantRoleStmt":
      return node.is_grant ? "GRANT ROLE" : "REVOKE ROLE";
    case "DefineStmt":
      return `CREATE ${objectWords(node.kind)}`;
    case "CreateFunctionStmt":
      return node.is_procedure ? "CREATE PROCEDURE" : "CREATE FUNCTION";
    case "VacuumStmt":
      return node.is_vacuumcmd ? "VACUUM" : "ANALYZE";
    case "CreateTableAsStmt":
      if (node.objtype === "OBJECT_MATVIEW") return "CREATE MATERIALIZED VIEW";
      return node.is_select_into ? "SELECT INTO" : "CREATE TABLE AS";
    case "VariableSetStmt":
      return node.kind === "VAR_RESET" || node.kind === "VAR_RESET_ALL" ? "RESET" : "SET";
    case "DiscardStmt":
      return `DISCARD ${String(node.target ?? "DISCARD_ALL").replace("DISCARD_", "")}`;
    case "DeallocateStmt":
      return node.isall || !node.name ? "DEALLOCATE ALL" : "DEALLOCATE";
    case "CreateTrigStmt":
      return node.isconstraint ? "CREATE CONSTRAINT" : "CREATE TRIGGER";
    default:
      // A statement newer than this table: its node name in words ("AlterFooStmt" → "ALTER FOO").
      return type.replace(/Stmt$/, "").replace(/([a-z])([A-Z])/g, "$1 $2").toUpperCase();
  }
}
