//! OpenAPI fragments for field rules a derive attribute cannot state (rules on list items
//! and map keys), behind the `schema` feature. The patterns are ECMA-262 regular
//! expressions, as JSON Schema wants; each mirrors a check in the code that enforces it.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

/// A string without NUL (`execve` cannot pass one).
pub const NO_NUL: &str = r"^[^\x00]*$";
/// A non-empty string without NUL.
pub const NO_NUL_NONEMPTY: &str = r"^[^\x00]+$";
/// An environment variable name: non-empty, no `=`, no NUL.
pub const ENV_NAME: &str = r"^[^=\x00]+$";
/// A `KEY=VALUE` environment entry with a valid name and a NUL-free value.
pub const ENV_ENTRY: &str = r"^[^=\x00]+=[^\x00]*$";
/// A path inside `/workspace`: relative, or absolute under `/workspace`; no `..`
/// component, backslash or NUL; components of at most [`MAX_PATH_COMPONENT`] characters.
/// The agent's own check counts bytes against Linux's limits (255 a component, 4096 in
/// all); a schema can only count characters, so the API allows what fits those limits in
/// any encoding (4 bytes a character at most). Line breaks are refused too: regex engines
/// disagree on them (`.` and `$`), and no workspace path needs one.
pub const WORKSPACE_PATH: &str = r"^(?![\s\S]*[\n\r\u2028\u2029])(?!/(?!workspace(/|$)))(?!(.*/)?\.\.(/|$))(?!.*[^/]{64})[^\\\x00]+$";
/// Longest accepted path, in characters.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest accepted path component, in characters.
pub const MAX_PATH_COMPONENT: usize = 63;

fn string(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// `[String]` whose items have no NUL.
pub fn no_nul_list() -> RefOr<Schema> {
    ArrayBuilder::new().items(string(NO_NUL)).into()
}

/// `{NAME: VALUE}` environment map: names per [`ENV_NAME`], values without NUL.
pub fn env_map() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(string(ENV_NAME)))
        .additional_properties(Some(string(NO_NUL)))
        .into()
}

/// `["KEY=VALUE", ...]` environment list.
pub fn env_entries() -> RefOr<Schema> {
    ArrayBuilder::new().items(string(ENV_ENTRY)).into()
}

/// A [`WORKSPACE_PATH`] string.
pub fn workspace_path() -> RefOr<Schema> {
    string(WORKSPACE_PATH)
        .min_length(Some(1))
        .max_length(Some(MAX_PATH_LEN))
        .into()
}

/// [`no_nul_list`] or `null`.
pub fn opt_no_nul_list() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(string(NO_NUL))
        .into()
}

/// [`workspace_path`] or `null`.
pub fn opt_workspace_path() -> RefOr<Schema> {
    string(WORKSPACE_PATH)
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(MAX_PATH_LEN))
        .into()
}
