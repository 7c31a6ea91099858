//! Any bytes through both access-log parsers, client extraction and route classification:
//! no panic, and a parsed record's derived values stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpslens_parsers::client::{client_address, ClientAddressSource};
use vpslens_parsers::route::RouteTable;
use vpslens_parsers::{parse_line, LogFormat};

fuzz_target!(|data: &[u8]| {
    let routes = RouteTable::default();
    for format in [LogFormat::Auto, LogFormat::IstioJson, LogFormat::IstioText] {
        if let Ok(rec) = parse_line(data, format) {
            assert!(rec.response_code == 0 || (100..=999).contains(&rec.response_code));
            let _ = client_address(&rec, ClientAddressSource::DownstreamRemote);
            for hops in [0, 1, 5] {
                let _ = client_address(&rec, ClientAddressSource::XForwardedFor { trusted_hops: hops });
            }
            if let Some(path) = rec.path.as_deref() {
                let t = routes.classify(path);
                let label = routes.label(t.route);
                assert!(routes.labels().any(|l| l == label));
            }
        }
    }
});
