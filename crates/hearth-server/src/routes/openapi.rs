//! `/openapi.json`: generated from the same route list as the router, then completed here
//! with what every route shares (the error answers of the key check, the extractors and
//! the 5xx path), the links from each create to the routes that take its id, and this
//! server's limits (`hearth_api::schema`). The committed snapshot
//! (`crates/hearth-server/openapi.json`) is [`document`] of the default limits.

use hearth_api::{ErrorBody, Limits};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

macro_rules! error_responses {
    ($($name:ident: $desc:literal,)*) => {
        $(
            #[doc = $desc]
            pub struct $name;
            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), error_response($desc))
                }
            }
        )*
    };
}

error_responses! {
    BadRequest: "Malformed request: JSON syntax, query string, content type.",
    Unauthorized: "No API key, or one that is not valid.",
    Forbidden: "The guest's user (uid 1000) may not do that to that file.",
    NotFound: "No such resource (or route).",
    Conflict: "Valid, but not in the resource's current state (the message names it).",
    PayloadTooLarge: "The body is larger than this route accepts.",
    InvalidRequest: "Well-formed, but a rule is broken (the message names the value and the rule).",
    TooManyRequests: "Too many VM boots at once; retry later.",
    Unavailable: "Something this request needs is unavailable right now (the message says what).",
    ServerError: "The server failed; the body carries a generic message and the request id under which the log has the details.",
}

fn error_response(desc: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(desc)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .into()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hearth API",
        description = "Run untrusted code in microVMs. Every answer carries an `X-Request-Id` \
                       header; errors are `ErrorBody`."
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    components(
        schemas(ErrorBody),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
                  InvalidRequest, TooManyRequests, Unavailable, ServerError)
    ),
    tags(
        (name = "vms", description = "VM lifecycle"),
        (name = "exec", description = "Running code in a VM"),
        (name = "files", description = "Moving files in and out of a VM"),
        (name = "processes", description = "Processes that outlive a request, and their terminals"),
        (name = "network", description = "A VM's outbound network"),
        (name = "images", description = "Kernels and root file systems"),
        (name = "keys", description = "API keys"),
        (name = "jobs", description = "Scripts and jobs"),
        (name = "meta", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document of a server with these limits.
pub fn document(limits: &Limits) -> Value {
    let mut doc = ApiDoc::openapi();
    let (_, routes) = super::public().merge(super::protected()).split_for_parts();
    doc.merge(routes);
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    add_request_id_header(&mut doc);
    add_shared_responses(&mut doc);
    add_links(&mut doc);
    hearth_api::schema::finish(&mut doc, limits);
    doc
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// The 5xx answer documents the `X-Request-Id` header it always carries.
fn add_request_id_header(doc: &mut Value) {
    if let Some(Value::Object(r)) = doc.pointer_mut("/components/responses/ServerError") {
        r.insert(
            "headers".into(),
            json!({"X-Request-Id": {
                "description": "Quote it when reporting the failure; the log has the details under it.",
                "required": true,
                "schema": {"type": "string"}
            }}),
        );
    }
}

/// Answers every operation can give, by what it takes: 401 behind the key check, 400
/// with a query string or a body, 413 and 422 with a JSON body, 5xx everywhere.
fn add_shared_responses(doc: &mut Value) {
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return;
    };
    for item in paths.values_mut() {
        let Value::Object(item) = item else { continue };
        for op in item.values_mut() {
            let Value::Object(op) = op else { continue };
            let public = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(Map::is_empty)));
            let has_query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            // A path parameter that is not a string (a pid) can fail to parse: 400.
            let typed_path = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["in"] == "path" && p["schema"]["type"] != "string")
                });
            let body = op.get("requestBody").cloned();
            let json_body = body
                .as_ref()
                .is_some_and(|b| b["content"].get("application/json").is_some());
            let Some(Value::Object(responses)) = op.get_mut("responses") else {
                continue;
            };
            let mut add = |status: &str, name: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| response_ref(name));
            };
            if !public {
                add("401", "Unauthorized");
            }
            if has_query || typed_path || body.is_some() {
                add("400", "BadRequest");
            }
            if body.is_some() {
                add("413", "PayloadTooLarge");
            }
            if json_body {
                add("422", "InvalidRequest");
            }
            add("5XX", "ServerError");
        }
    }
}

/// From each create to the routes that take the id it returns:
/// (path, method, status, [(parameter, runtime expression)], [(link name, operationId)]).
type Links = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
);

/// The id a create answers with (`/id`), or a job's (`/job_id`).
const ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
const JOB_ID: &[(&str, &str)] = &[("id", "$response.body#/job_id")];
/// A started process: the VM's id from the request, its pid from the answer.
const PROCESS_ID: &[(&str, &str)] = &[("id", "$request.path.id"), ("pid", "$response.body#/pid")];

const VM_ROUTES: &[(&str, &str)] = &[
    ("GetVm", "get_vm"),
    ("DeleteVm", "delete_vm"),
    ("StopVm", "stop_vm"),
    ("StartVm", "start_vm"),
    ("PauseVm", "pause_vm"),
    ("ResumeVm", "resume_vm"),
    ("Exec", "exec"),
    ("RunTs", "run_ts"),
    ("RunJs", "run_js"),
    ("RunPython", "run_python"),
    ("UploadFiles", "upload_files"),
    ("DownloadFiles", "download_files"),
    ("GetFirewall", "get_firewall"),
    ("SetAllowlist", "set_allowlist"),
    ("ConsoleLog", "console_log"),
    ("CallHistory", "call_history"),
    ("MakeTemplate", "template"),
    ("ReadFile", "read_file"),
    ("WriteFile", "write_file"),
    ("ListFiles", "list_files"),
    ("StatFile", "stat_file"),
    ("MakeDir", "make_dir"),
    ("MoveFile", "move_file"),
    ("DeleteFile", "delete_file"),
    ("WatchFiles", "watch_files"),
    ("StartProcess", "start_process"),
    ("ListProcesses", "list_processes"),
];
const PROCESS_ROUTES: &[(&str, &str)] = &[
    ("GetProcess", "get_process"),
    ("KillProcess", "kill_process"),
    ("ProcessOutput", "process_output"),
    ("ProcessStdin", "process_stdin"),
    ("SignalProcess", "signal_process"),
    ("AttachProcess", "attach_process"),
];
const JOB_ROUTES: &[(&str, &str)] = &[
    ("GetJob", "get_job"),
    ("JobLogs", "job_logs"),
    ("CancelJob", "cancel_job"),
];
const LINKS: &[Links] = &[
    ("/v1/vms", "post", "201", ID, VM_ROUTES),
    ("/v1/vms/{id}/start", "post", "200", ID, VM_ROUTES),
    (
        "/v1/images",
        "post",
        "201",
        ID,
        &[
            ("PutKernel", "put_kernel"),
            ("PutRootfs", "put_rootfs"),
            ("SetDefaultImage", "set_default_image"),
            ("DeleteImage", "delete_image"),
        ],
    ),
    (
        "/v1/keys",
        "post",
        "201",
        ID,
        &[("DeleteKey", "delete_key")],
    ),
    (
        "/v1/scripts",
        "post",
        "201",
        ID,
        &[
            ("GetScript", "get_script"),
            ("RunScript", "run_script"),
            ("DeleteScript", "delete_script"),
        ],
    ),
    ("/v1/jobs", "post", "202", JOB_ID, JOB_ROUTES),
    ("/v1/scripts/{id}/run", "post", "202", JOB_ID, JOB_ROUTES),
    (
        "/v1/vms/{id}/processes",
        "post",
        "201",
        PROCESS_ID,
        PROCESS_ROUTES,
    ),
];

fn add_links(doc: &mut Value) {
    for (path, method, status, params, targets) in LINKS {
        let at = format!(
            "/paths/{}/{method}/responses/{status}",
            path.replace('~', "~0").replace('/', "~1")
        );
        let Some(Value::Object(resp)) = doc.pointer_mut(&at) else {
            panic!("OpenAPI links: no response {status} of {method} {path}");
        };
        let links: Map<String, Value> = targets
            .iter()
            .map(|(name, op)| {
                let params: Map<String, Value> = params
                    .iter()
                    .map(|(p, e)| (p.to_string(), json!(e)))
                    .collect();
                let link = json!({"operationId": op, "parameters": params});
                (name.to_string(), link)
            })
            .collect();
        resp.insert("links".into(), Value::Object(links));
    }
}
