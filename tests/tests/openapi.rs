//! The REST API's OpenAPI document, as a coordinator serves it, passes a
//! standard validator (openapi-spec-validator, installed by the test
//! command) and describes every route the API answers.

use weir_tests::cluster::Cluster;
use weir_tests::file_job;

#[test]
fn the_served_openapi_document_is_valid_and_complete() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let a = file_job(dir, &["--records", "1000", "--seed", "3"], &[]);
    let cluster = Cluster::start(dir, &a, 0);
    let (status, document) = cluster.rest("GET", "/api/openapi.json");
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["openapi"], "3.1.0");
    let path = dir.join("openapi.json");
    std::fs::write(&path, document.to_string()).expect("write the document");
    let out = std::process::Command::new("openapi-spec-validator")
        .arg(&path)
        .output()
        .expect("openapi-spec-validator (from the test command's Python tools) runs");
    assert!(
        out.status.success(),
        "the document is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every operation is served (none answers 404 or 405), and its answers
    // are the schemas' shape: a GET's fields are documented.
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 11, "{paths:?}");
    for (path, item) in paths {
        for method in item.as_object().expect("operations").keys() {
            if method != "get" {
                continue;
            }
            let (status, answer) = cluster.rest("GET", path);
            assert!(
                status != 404 && status != 405,
                "GET {path}: {status} {answer}"
            );
        }
    }
    let (_, job) = cluster.rest("GET", "/api/v1/job");
    let schema = &document["components"]["schemas"]["JobStatus"]["properties"];
    for field in job.as_object().expect("a job").keys() {
        assert!(
            schema.get(field).is_some(),
            "JobStatus.{field} is not in the document"
        );
    }
    // An unknown path points to the document.
    let (status, answer) = cluster.rest("GET", "/api/v2/nothing");
    assert_eq!(status, 404);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|m| m.contains("/api/openapi.json")),
        "{answer}"
    );
}
