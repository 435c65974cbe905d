//! The seed's example 1 on the glommio runtime: answers every request with
//! its environ as JSON.

use std::process::ExitCode;

use serde_json::{Map, Value};
use simple_fastcgi_glommio::{Json, Request};

fn main() -> ExitCode {
    simple_fastcgi_examples::serve_async(|| {
        async |req: &mut Request<'_>| {
            let environ: Map<String, Value> = req
                .environ()
                .iter()
                .map(|pair| {
                    (
                        String::from_utf8_lossy(pair.name).into_owned(),
                        Value::String(String::from_utf8_lossy(pair.value).into_owned()),
                    )
                })
                .collect();
            req.send_response(200, "application/json", Json(environ), &[], false)
                .await
        }
    })
}
