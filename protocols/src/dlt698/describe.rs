//! Every field of a captured frame, for `meterd decode --protocol dlt698` and its `--json`:
//! the header as printed on the nameplate, every OAD as 8 hex digits, every value of a
//! catalogued object with its scaler applied in the contract's unit (and its quantity name),
//! other values as text; DAR codes by name; a SECURITY wrapper's plaintext APDU decoded, its
//! MAC shown (never verified: that needs the meter's ESAM).

use serde::Serialize;

use super::{
    apdu::*,
    catalogue,
    data::{Csd, Data, Oad, Omd, Rsd, Tsa},
    error::Dlt698Error,
    frame::{self, Frame},
};

/// A value as shown: a number (scaled where the catalogue knows the object), text, a list.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<Value>),
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Description {
    pub preamble: usize,
    /// L: the bytes between 68 and 16.
    pub length: usize,
    pub control: String,
    pub direction: &'static str,
    pub function: &'static str,
    pub scrambled: bool,
    pub address: String,
    pub address_type: &'static str,
    pub logical_address: u8,
    pub client_address: u8,
    pub hcs: String,
    pub fcs: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragment: Option<FragmentDesc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apdu: Option<ApduDesc>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct FragmentDesc {
    pub kind: &'static str,
    pub seq: u16,
    pub reserved_bits: u8,
    pub data: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ApduDesc {
    pub service: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piid: Option<u8>,
    /// What the service says besides its items (times, results, sizes…), in order; a JSON
    /// object.
    #[serde(serialize_with = "as_map")]
    pub fields: Vec<(String, Value)>,
    pub items: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<Box<ApduDesc>>,
}

/// One OAD (or OMD) of a request or result.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct Item {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oad: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    /// Quantity name → value, for catalogued objects; a JSON object.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    pub quantities: Vec<(&'static str, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<Value>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_back: Option<Box<Item>>,
}

/// Pairs as a map, in their order.
fn as_map<S: serde::Serializer, K: Serialize, V: Serialize>(
    pairs: &[(K, V)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02X}")).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Data value as shown, without a catalogue entry.
pub fn value(d: &Data) -> Value {
    match d {
        Data::Null => Value::Null,
        Data::Bool(b) => Value::Bool(*b),
        Data::Array(v) | Data::Structure(v) => Value::List(v.iter().map(value).collect()),
        Data::BitString { bits, bytes } => Value::Text(
            (0..*bits)
                .map(|i| {
                    if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                        '1'
                    } else {
                        '0'
                    }
                })
                .collect(),
        ),
        Data::OctetString(b) | Data::Mac(b) | Data::Rn(b) => Value::Text(hex(b)),
        Data::VisibleString(b) | Data::Utf8String(b) => Value::Text(text(b)),
        Data::DateTime(t) => Value::Text(t.to_string()),
        Data::DateTimeS(t) => Value::Text(t.to_string()),
        Data::Date(t) => Value::Text(format!(
            "{:04}-{:02}-{:02} wd{}",
            t.year, t.month, t.day, t.weekday
        )),
        Data::Time(t) => Value::Text(format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second)),
        Data::Oi(oi) => Value::Text(format!("{oi:04X}")),
        Data::Oad(o) => Value::Text(o.to_string()),
        Data::Road(r) => Value::Text(format!(
            "{}: {}",
            r.oad,
            r.related
                .iter()
                .map(Oad::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Data::Omd(o) => Value::Text(o.dashed()),
        Data::Ti(t) => Value::Text(format!("{} {}", t.value, t.unit_name())),
        Data::Tsa(t) => Value::Text(t.printed()),
        Data::ScalerUnit { scaler, unit } => Value::Text(format!(
            "10^{scaler} {}",
            catalogue::unit_name(*unit).map_or_else(|| format!("unit {unit}"), str::to_string)
        )),
        Data::Csd(c) => Value::Text(csd(c)),
        Data::Rcsd(cols) => Value::List(cols.iter().map(|c| Value::Text(csd(c))).collect()),
        Data::Comdcb(b) => Value::Text(hex(b)),
        Data::Rsd(r) => Value::Text(rsd(r)),
        Data::Region(_) | Data::Ms(_) | Data::Sid(_) | Data::SidMac { .. } => {
            Value::Text(format!("{d:?}"))
        }
        other => other.as_f64().map_or(Value::Null, Value::Number),
    }
}

fn csd(c: &Csd) -> String {
    match c {
        Csd::Oad(o) => o.to_string(),
        Csd::Road(r) => format!(
            "{}[{}]",
            r.oad,
            r.related
                .iter()
                .map(Oad::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn rsd(r: &Rsd) -> String {
    match r {
        Rsd::None => "selector 0".into(),
        Rsd::Equal { oad, value: v } => format!("selector 1: {oad} = {}", show(&value(v))),
        Rsd::Range(s) => format!(
            "selector 2: {} from {} to {} every {}",
            s.oad,
            show(&value(&s.start)),
            show(&value(&s.end)),
            show(&value(&s.interval))
        ),
        Rsd::Ranges(v) => format!("selector 3: {} ranges", v.len()),
        Rsd::Collected { selector, time, .. } => format!("selector {selector}: {time}"),
        Rsd::Between {
            selector,
            start,
            end,
            interval,
            ..
        } => format!(
            "selector {selector}: {start} to {end} every {} {}",
            interval.value,
            interval.unit_name()
        ),
        Rsd::Last(n) => format!("selector 9: record {n} back"),
        Rsd::LastOf { n, .. } => format!("selector 10: last {n} records"),
    }
}

/// A value on one line.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Text(t) => t.clone(),
        Value::List(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn name_of(oad: Oad) -> Option<&'static str> {
    catalogue::lookup(oad)
        .map(|o| o.name)
        .or_else(|| catalogue::object_name(oad.oi))
}

/// An OAD's result as shown: scaled and named where the catalogue knows it.
pub fn result_item(r: &ResultNormal) -> Item {
    result_normal(r)
}

/// An OAD and its value: scaled and named where the catalogue knows it.
fn item(oad: Oad, data: Option<&Data>, dar: Option<Dar>) -> Item {
    let mut it = Item {
        oad: Some(oad.to_string()),
        name: name_of(oad),
        dar: dar.map(|d| d.to_string()),
        ..Item::default()
    };
    if let Some(d) = data {
        match catalogue::lookup(oad).and_then(|o| Some((o, o.values(oad.index, d)?))) {
            Some((o, values)) => {
                it.unit = Some(contract_unit(o));
                it.value = Some(if values.len() == 1 && !matches!(d, Data::Array(_)) {
                    Value::Number(values[0].1)
                } else {
                    Value::List(values.iter().map(|(_, v)| Value::Number(*v)).collect())
                });
                it.quantities = values
                    .into_iter()
                    .filter_map(|(q, v)| Some((q?, v)))
                    .collect();
            }
            None => it.value = Some(value(d)),
        }
    }
    it
}

fn contract_unit(o: &catalogue::Object) -> &'static str {
    match (o.unit, o.shift) {
        ("kW", 3) => "W",
        ("kvar", 3) => "var",
        ("kVA", 3) => "VA",
        (u, _) => u,
    }
}

use super::dar::Dar;

fn result_normal(r: &ResultNormal) -> Item {
    match &r.result {
        GetResult::Data(d) => item(r.oad, Some(d), None),
        GetResult::Dar(dar) => item(r.oad, None, Some(*dar)),
    }
}

fn result_record(r: &ResultRecord) -> Item {
    let mut it = item(r.oad, None, None);
    it.columns = r.columns.iter().map(csd).collect();
    match &r.result {
        RecordResult::Dar(d) => it.dar = Some(d.to_string()),
        RecordResult::Rows(rows) => {
            it.rows = Some(
                rows.iter()
                    .map(|row| {
                        row.iter()
                            .zip(&r.columns)
                            .map(|(d, c)| match c {
                                Csd::Oad(o) => item(*o, Some(d), None).value.unwrap_or(Value::Null),
                                Csd::Road(_) => value(d),
                            })
                            .collect()
                    })
                    .collect(),
            )
        }
    }
    it
}

fn get_record(g: &GetRecord) -> Item {
    let mut it = item(g.oad, None, None);
    it.selector = Some(rsd(&g.rsd));
    it.columns = g.columns.iter().map(csd).collect();
    it
}

fn server(tsa: &Tsa, mut it: Item) -> Item {
    it.server = Some(tsa.printed());
    it
}

fn action(a: &ActionResult) -> Item {
    Item {
        omd: Some(a.omd.dashed()),
        name: catalogue::object_name(a.omd.oi),
        dar: Some(a.dar.to_string()),
        value: a.data.as_ref().map(value),
        ..Item::default()
    }
}

fn then_get_item<T>(t: &ThenGet<T>, head: Item) -> Item {
    let mut it = head;
    it.value = Some(value(&t.data));
    let mut back = item(t.get, None, None);
    back.selector = Some(format!("after {} s", t.delay));
    it.read_back = Some(Box::new(back));
    it
}

fn text_value(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn f(name: &str, v: Value) -> (String, Value) {
    (name.to_string(), v)
}

fn time_tag_field(t: &Option<TimeTag>, fields: &mut Vec<(String, Value)>) {
    if let Some(t) = t {
        fields.push(f(
            "time_tag",
            text_value(format!(
                "sent {} valid {} {}",
                t.sent,
                t.delay.value,
                t.delay.unit_name()
            )),
        ));
    }
}

fn negotiation(n: &Negotiation) -> Vec<(String, Value)> {
    vec![
        f("protocol_version", Value::Number(f64::from(n.version))),
        f(
            "protocol_conformance",
            text_value(hex(&n.protocol_conformance)),
        ),
        f(
            "function_conformance",
            text_value(hex(&n.function_conformance)),
        ),
        f("send_frame_max", Value::Number(f64::from(n.send_max))),
        f("receive_frame_max", Value::Number(f64::from(n.recv_max))),
        f("receive_window", Value::Number(f64::from(n.window))),
        f("apdu_max", Value::Number(f64::from(n.apdu_max))),
        f("timeout_s", Value::Number(f64::from(n.timeout))),
    ]
}

/// The description of an APDU; `depth` bounds nested SECURITY wrappers.
pub fn describe_apdu(a: &Apdu) -> ApduDesc {
    describe_at(a, 0)
}

fn describe_at(a: &Apdu, depth: usize) -> ApduDesc {
    let mut d = ApduDesc {
        service: a.name(),
        piid: a.piid(),
        fields: Vec::new(),
        items: Vec::new(),
        inner: None,
    };
    let fields = &mut d.fields;
    let items = &mut d.items;
    match a {
        Apdu::LinkRequest {
            kind,
            heartbeat,
            time,
            ..
        } => {
            fields.push(f(
                "type",
                text_value(match kind {
                    0 => "login",
                    1 => "heartbeat",
                    2 => "logout",
                    _ => "unknown",
                }),
            ));
            fields.push(f("heartbeat_s", Value::Number(f64::from(*heartbeat))));
            fields.push(f("time", text_value(time.to_string())));
        }
        Apdu::LinkResponse {
            result,
            request,
            received,
            responded,
            ..
        } => {
            fields.push(f(
                "result",
                text_value(match result & 7 {
                    0 => "success",
                    1 => "address already logged in",
                    2 => "illegal device",
                    3 => "capacity exceeded",
                    _ => "unknown",
                }),
            ));
            fields.push(f("clock_trusted", Value::Bool(result & 0x80 != 0)));
            fields.push(f("request_time", text_value(request.to_string())));
            fields.push(f("received_time", text_value(received.to_string())));
            fields.push(f("response_time", text_value(responded.to_string())));
        }
        Apdu::SecurityRequest {
            payload,
            verification,
        } => {
            match payload {
                Payload::Plain(_) => fields.push(f("data", text_value("plaintext"))),
                Payload::Cipher(c) => fields.push(f("ciphertext", text_value(hex(c)))),
            }
            match verification {
                RequestVerification::Rn(rn) => fields.push(f("rn", text_value(hex(rn)))),
                RequestVerification::RnMac { rn, mac } => {
                    fields.push(f("rn", text_value(hex(rn))));
                    fields.push(f("mac", text_value(hex(mac))));
                }
                RequestVerification::SidMac { sid, mac } => {
                    fields.push(f(
                        "sid",
                        text_value(format!("{:08X} {}", sid.ident, hex(&sid.extra))),
                    ));
                    fields.push(f("mac", text_value(hex(mac))));
                }
                RequestVerification::Sid(sid) => fields.push(f(
                    "sid",
                    text_value(format!("{:08X} {}", sid.ident, hex(&sid.extra))),
                )),
            }
        }
        Apdu::SecurityResponse { payload, mac } => {
            match payload {
                ResponsePayload::Plain(_) => fields.push(f("data", text_value("plaintext"))),
                ResponsePayload::Cipher(c) => fields.push(f("ciphertext", text_value(hex(c)))),
                ResponsePayload::Dar(dar) => fields.push(f("dar", text_value(dar.to_string()))),
            }
            if let Some(m) = mac {
                fields.push(f(
                    "mac",
                    text_value(format!("{} (not verified: needs the meter's ESAM)", hex(m))),
                ));
            }
        }
        Apdu::Client {
            service, time_tag, ..
        } => {
            time_tag_field(time_tag, fields);
            match service {
                ClientService::Connect {
                    negotiation: n,
                    mechanism,
                } => {
                    fields.extend(negotiation(n));
                    fields.push(f(
                        "mechanism",
                        text_value(match mechanism {
                            ConnectMechanism::Public => "public",
                            ConnectMechanism::Password(_) => "password",
                            ConnectMechanism::Symmetric { .. } => "symmetric",
                            ConnectMechanism::Signature { .. } => "signature",
                        }),
                    ));
                }
                ClientService::Release => {}
                ClientService::Get(g) => match g {
                    GetRequest::Normal(o) | GetRequest::Md5(o) => items.push(item(*o, None, None)),
                    GetRequest::NormalList(v) => {
                        items.extend(v.iter().map(|o| item(*o, None, None)))
                    }
                    GetRequest::Record(g) => items.push(get_record(g)),
                    GetRequest::RecordList(v) => items.extend(v.iter().map(get_record)),
                    GetRequest::Next(n) => {
                        fields.push(f("last_block_received", Value::Number(f64::from(*n))))
                    }
                },
                ClientService::Set(s) => match s {
                    SetRequest::Normal(o, v) => items.push(item(*o, Some(v), None)),
                    SetRequest::NormalList(v) => {
                        items.extend(v.iter().map(|(o, d)| item(*o, Some(d), None)))
                    }
                    SetRequest::ThenGet(v) => items.extend(
                        v.iter()
                            .map(|t| then_get_item(t, item(t.target, None, None))),
                    ),
                },
                ClientService::Action(a) => {
                    let head = |o: &Omd| Item {
                        omd: Some(o.dashed()),
                        name: catalogue::object_name(o.oi),
                        ..Item::default()
                    };
                    match a {
                        ActionRequest::Normal(o, v) => items.push(Item {
                            value: Some(value(v)),
                            ..head(o)
                        }),
                        ActionRequest::NormalList(v) => items.extend(v.iter().map(|(o, d)| Item {
                            value: Some(value(d)),
                            ..head(o)
                        })),
                        ActionRequest::ThenGet(v) => {
                            items.extend(v.iter().map(|t| then_get_item(t, head(&t.target))))
                        }
                    }
                }
                ClientService::ReportResponse(r) => {
                    if let ReportResponse::List(v) | ReportResponse::RecordList(v) = r {
                        items.extend(v.iter().map(|o| item(*o, None, None)));
                    }
                }
                ClientService::Proxy(p) => proxy_request(p, fields, items),
            }
        }
        Apdu::Server {
            service,
            follow,
            time_tag,
            ..
        } => {
            time_tag_field(time_tag, fields);
            match service {
                ServerService::Connect {
                    factory,
                    negotiation: n,
                    result,
                    security,
                } => {
                    fields.push(f(
                        "vendor",
                        text_value(text(&factory[..4]).trim_end_matches('\0')),
                    ));
                    fields.push(f("software_version", text_value(text(&factory[4..8]))));
                    fields.push(f("software_date", text_value(text(&factory[8..14]))));
                    fields.push(f("hardware_version", text_value(text(&factory[14..18]))));
                    fields.push(f("hardware_date", text_value(text(&factory[18..24]))));
                    fields.extend(negotiation(n));
                    fields.push(f("result", Value::Number(f64::from(*result))));
                    if let Some((rn, sig)) = security {
                        fields.push(f("server_rn", text_value(hex(rn))));
                        fields.push(f("server_signature", text_value(hex(sig))));
                    }
                }
                ServerService::Release { result } => {
                    fields.push(f("result", Value::Number(f64::from(*result))))
                }
                ServerService::ReleaseNotification { since, now } => {
                    fields.push(f("since", text_value(since.to_string())));
                    fields.push(f("now", text_value(now.to_string())));
                }
                ServerService::Error { kind } => fields.push(f(
                    "error",
                    text_value(match kind {
                        1 => "APDU cannot be parsed",
                        2 => "service not supported",
                        _ => "other",
                    }),
                )),
                ServerService::Get(g) => match g {
                    GetResponse::Normal(r) => items.push(result_normal(r)),
                    GetResponse::NormalList(v) => items.extend(v.iter().map(result_normal)),
                    GetResponse::Record(r) => items.push(result_record(r)),
                    GetResponse::RecordList(v) => items.extend(v.iter().map(result_record)),
                    GetResponse::Next {
                        last,
                        block,
                        result,
                    } => {
                        fields.push(f("last_block", Value::Bool(*last)));
                        fields.push(f("block", Value::Number(f64::from(*block))));
                        match result {
                            NextResult::Dar(d) => fields.push(f("dar", text_value(d.to_string()))),
                            NextResult::Normal(v) => items.extend(v.iter().map(result_normal)),
                            NextResult::Record(v) => items.extend(v.iter().map(result_record)),
                        }
                    }
                    GetResponse::Md5 { oad, result } => items.push(match result {
                        Ok(md5) => Item {
                            value: Some(text_value(hex(md5))),
                            ..item(*oad, None, None)
                        },
                        Err(d) => item(*oad, None, Some(*d)),
                    }),
                },
                ServerService::Set(s) => match s {
                    SetResponse::Normal(o, d) => items.push(item(*o, None, Some(*d))),
                    SetResponse::NormalList(v) => {
                        items.extend(v.iter().map(|(o, d)| item(*o, None, Some(*d))))
                    }
                    SetResponse::ThenGet(v) => items.extend(v.iter().map(|(o, d, r)| Item {
                        read_back: Some(Box::new(result_normal(r))),
                        ..item(*o, None, Some(*d))
                    })),
                },
                ServerService::Action(a) => match a {
                    ActionResponse::Normal(r) => items.push(action(r)),
                    ActionResponse::NormalList(v) => items.extend(v.iter().map(action)),
                    ActionResponse::ThenGet(v) => items.extend(v.iter().map(|(a, r)| Item {
                        read_back: Some(Box::new(result_normal(r))),
                        ..action(a)
                    })),
                },
                ServerService::Report(r) => match r {
                    ReportNotification::List(v) => items.extend(v.iter().map(result_normal)),
                    ReportNotification::RecordList(v) => items.extend(v.iter().map(result_record)),
                    ReportNotification::TransData { port, data } => {
                        items.push(item(*port, None, None));
                        fields.extend(data.iter().map(|d| f("data", text_value(hex(d)))));
                    }
                },
                ServerService::Proxy(p) => proxy_response(p, items),
            }
            if let Some(fr) = follow {
                match fr {
                    FollowReport::Normal(v) => items.extend(v.iter().map(result_normal)),
                    FollowReport::Record(v) => items.extend(v.iter().map(result_record)),
                }
                fields.push(f("follow_report", Value::Bool(true)));
            }
        }
    }
    if depth < 2 {
        if let Some(Ok(inner)) = a.unwrap_plain() {
            d.inner = Some(Box::new(describe_at(&inner, depth + 1)));
        }
    }
    d
}

fn proxy_request(p: &ProxyRequest, fields: &mut Vec<(String, Value)>, items: &mut Vec<Item>) {
    let timeout = |t: &u16| f("timeout_s", Value::Number(f64::from(*t)));
    match p {
        ProxyRequest::GetList {
            timeout: t,
            targets,
        } => {
            fields.push(timeout(t));
            for tg in targets {
                items.extend(
                    tg.items
                        .iter()
                        .map(|o| server(&tg.tsa, item(*o, None, None))),
                );
            }
        }
        ProxyRequest::GetRecord {
            timeout: t,
            tsa,
            record,
        } => {
            fields.push(timeout(t));
            items.push(server(tsa, get_record(record)));
        }
        ProxyRequest::SetList {
            timeout: t,
            targets,
        } => {
            fields.push(timeout(t));
            for tg in targets {
                items.extend(
                    tg.items
                        .iter()
                        .map(|(o, d)| server(&tg.tsa, item(*o, Some(d), None))),
                );
            }
        }
        ProxyRequest::SetThenGetList {
            timeout: t,
            targets,
        } => {
            fields.push(timeout(t));
            for tg in targets {
                items.extend(
                    tg.items
                        .iter()
                        .map(|x| server(&tg.tsa, then_get_item(x, item(x.target, None, None)))),
                );
            }
        }
        ProxyRequest::ActionList {
            timeout: t,
            targets,
        } => {
            fields.push(timeout(t));
            for tg in targets {
                items.extend(tg.items.iter().map(|(o, d)| {
                    server(
                        &tg.tsa,
                        Item {
                            omd: Some(o.dashed()),
                            value: Some(value(d)),
                            ..Item::default()
                        },
                    )
                }));
            }
        }
        ProxyRequest::ActionThenGetList {
            timeout: t,
            targets,
        } => {
            fields.push(timeout(t));
            for tg in targets {
                items.extend(tg.items.iter().map(|x| {
                    server(
                        &tg.tsa,
                        then_get_item(
                            x,
                            Item {
                                omd: Some(x.target.dashed()),
                                ..Item::default()
                            },
                        ),
                    )
                }));
            }
        }
        ProxyRequest::TransCommand {
            port,
            comdcb,
            timeout: t,
            byte_timeout,
            command,
        } => {
            items.push(item(*port, None, None));
            fields.push(f("comdcb", text_value(hex(comdcb))));
            fields.push(timeout(t));
            fields.push(f(
                "byte_timeout_ms",
                Value::Number(f64::from(*byte_timeout)),
            ));
            fields.push(f("command", text_value(hex(command))));
        }
    }
}

fn proxy_response(p: &ProxyResponse, items: &mut Vec<Item>) {
    match p {
        ProxyResponse::GetList(v) => {
            for (tsa, rs) in v {
                items.extend(rs.iter().map(|r| server(tsa, result_normal(r))));
            }
        }
        ProxyResponse::GetRecord { tsa, record } => items.push(server(tsa, result_record(record))),
        ProxyResponse::SetList(v) => {
            for (tsa, rs) in v {
                items.extend(
                    rs.iter()
                        .map(|(o, d)| server(tsa, item(*o, None, Some(*d)))),
                );
            }
        }
        ProxyResponse::SetThenGetList(v) => {
            for (tsa, rs) in v {
                items.extend(rs.iter().map(|(o, d, r)| {
                    server(
                        tsa,
                        Item {
                            read_back: Some(Box::new(result_normal(r))),
                            ..item(*o, None, Some(*d))
                        },
                    )
                }));
            }
        }
        ProxyResponse::ActionList(v) => {
            for (tsa, rs) in v {
                items.extend(rs.iter().map(|a| server(tsa, action(a))));
            }
        }
        ProxyResponse::ActionThenGetList(v) => {
            for (tsa, rs) in v {
                items.extend(rs.iter().map(|(a, r)| {
                    server(
                        tsa,
                        Item {
                            read_back: Some(Box::new(result_normal(r))),
                            ..action(a)
                        },
                    )
                }));
            }
        }
        ProxyResponse::TransCommand { port, result } => items.push(match result {
            Ok(reply) => Item {
                value: Some(text_value(hex(reply))),
                ..item(*port, None, None)
            },
            Err(d) => item(*port, None, Some(*d)),
        }),
    }
}

/// Every field of one frame (FE preamble allowed, nothing after it). A frame whose APDU does
/// not decode is an error: a capture with a bad APDU is not valid.
pub fn describe(bytes: &[u8]) -> Result<Description, Dlt698Error> {
    let (fr, pre) = frame::parse(bytes)?;
    let f0 = &bytes[pre..];
    let header = 8 + fr.address.bytes.len();
    let word = |i: usize| format!("{:04X}", u16::from_le_bytes([f0[i], f0[i + 1]]));
    let apdu = match fr.fragment {
        Some(_) => None,
        None => Some(describe_apdu(&Apdu::decode(&fr.data)?)),
    };
    Ok(Description {
        preamble: pre,
        length: f0.len() - 2,
        control: format!("{:02X}", fr.control.0),
        direction: direction(&fr),
        function: if fr.control.function() == 1 {
            "link management"
        } else {
            "user data"
        },
        scrambled: fr.control.scrambled(),
        address: fr.address.to_string(),
        address_type: fr.address.kind.name(),
        logical_address: fr.address.logical,
        client_address: fr.client,
        hcs: word(header - 2),
        fcs: word(f0.len() - 3),
        fragment: fr.fragment.map(|w| FragmentDesc {
            kind: w.kind.name(),
            seq: w.seq,
            reserved_bits: w.reserved,
            data: hex(&fr.data),
        }),
        apdu,
    })
}

fn direction(fr: &Frame) -> &'static str {
    match (fr.control.from_server(), fr.control.client_started()) {
        (false, true) => "client request",
        (true, true) => "server response",
        (true, false) => "server-initiated",
        (false, false) => "client answer to server-initiated",
    }
}
