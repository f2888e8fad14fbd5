//! APDUs: LINK, CONNECT, RELEASE, GET, SET, ACTION, REPORT, PROXY, SECURITY and ERROR, decoded
//! from and encoded to exactly the same bytes. Client APDUs end with an optional TimeTag,
//! server APDUs with an optional FollowReport and TimeTag; LINK and SECURITY have neither.
//! The PIID byte is kept whole (service number, priority, ACD or the reserved bit 6, which
//! some tools set).

use super::{
    axdr::{Reader, Writer},
    dar::Dar,
    data::*,
    error::Dlt698Error,
};

type R<T> = Result<T, Dlt698Error>;

/// Send time and allowed delay of a client request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TimeTag {
    pub sent: DateTimeS,
    pub delay: Ti,
}

/// Get-Result: a refusal or the value.
#[derive(Clone, PartialEq, Debug)]
pub enum GetResult {
    Dar(Dar),
    Data(Data),
}

/// A-ResultNormal: one OAD's result.
#[derive(Clone, PartialEq, Debug)]
pub struct ResultNormal {
    pub oad: Oad,
    pub result: GetResult,
}

/// The rows of a record read, or its refusal.
#[derive(Clone, PartialEq, Debug)]
pub enum RecordResult {
    Dar(Dar),
    /// One Data per column in each row.
    Rows(Vec<Vec<Data>>),
}

/// A-ResultRecord: the columns (always echoed) and rows.
#[derive(Clone, PartialEq, Debug)]
pub struct ResultRecord {
    pub oad: Oad,
    pub columns: Vec<Csd>,
    pub result: RecordResult,
}

/// GetRecord: which records of `oad`, which columns.
#[derive(Clone, PartialEq, Debug)]
pub struct GetRecord {
    pub oad: Oad,
    pub rsd: Rsd,
    pub columns: Vec<Csd>,
}

#[derive(Clone, PartialEq, Debug)]
pub enum FollowReport {
    Normal(Vec<ResultNormal>),
    Record(Vec<ResultRecord>),
}

#[derive(Clone, PartialEq, Debug)]
pub enum GetRequest {
    Normal(Oad),
    NormalList(Vec<Oad>),
    Record(GetRecord),
    RecordList(Vec<GetRecord>),
    /// The last block number received.
    Next(u16),
    Md5(Oad),
}

#[derive(Clone, PartialEq, Debug)]
pub enum NextResult {
    Dar(Dar),
    Normal(Vec<ResultNormal>),
    Record(Vec<ResultRecord>),
}

#[derive(Clone, PartialEq, Debug)]
pub enum GetResponse {
    Normal(ResultNormal),
    NormalList(Vec<ResultNormal>),
    Record(ResultRecord),
    RecordList(Vec<ResultRecord>),
    Next {
        last: bool,
        block: u16,
        result: NextResult,
    },
    Md5 {
        oad: Oad,
        result: Result<Vec<u8>, Dar>,
    },
}

/// SET then GET, or ACTION then GET: the read-back OAD and its delay in seconds.
#[derive(Clone, PartialEq, Debug)]
pub struct ThenGet<T> {
    pub target: T,
    pub data: Data,
    pub get: Oad,
    pub delay: u8,
}

#[derive(Clone, PartialEq, Debug)]
pub enum SetRequest {
    Normal(Oad, Data),
    NormalList(Vec<(Oad, Data)>),
    ThenGet(Vec<ThenGet<Oad>>),
}

/// A SET-then-GET item's result: the SET's DAR and the read-back.
pub type SetThenGetResult = (Oad, Dar, ResultNormal);

#[derive(Clone, PartialEq, Debug)]
pub enum SetResponse {
    Normal(Oad, Dar),
    NormalList(Vec<(Oad, Dar)>),
    ThenGet(Vec<SetThenGetResult>),
}

#[derive(Clone, PartialEq, Debug)]
pub enum ActionRequest {
    Normal(Omd, Data),
    NormalList(Vec<(Omd, Data)>),
    ThenGet(Vec<ThenGet<Omd>>),
}

/// One method's result and its optional return data.
#[derive(Clone, PartialEq, Debug)]
pub struct ActionResult {
    pub omd: Omd,
    pub dar: Dar,
    pub data: Option<Data>,
}

#[derive(Clone, PartialEq, Debug)]
pub enum ActionResponse {
    Normal(ActionResult),
    NormalList(Vec<ActionResult>),
    ThenGet(Vec<(ActionResult, ResultNormal)>),
}

#[derive(Clone, PartialEq, Debug)]
pub enum ReportNotification {
    List(Vec<ResultNormal>),
    RecordList(Vec<ResultRecord>),
    TransData { port: Oad, data: Vec<Vec<u8>> },
}

#[derive(Clone, PartialEq, Debug)]
pub enum ReportResponse {
    List(Vec<Oad>),
    RecordList(Vec<Oad>),
    TransData,
}

/// One meter behind a terminal, its own timeout (s) and what to do there.
#[derive(Clone, PartialEq, Debug)]
pub struct ProxyTarget<T> {
    pub tsa: Tsa,
    pub timeout: u16,
    pub items: Vec<T>,
}

#[derive(Clone, PartialEq, Debug)]
pub enum ProxyRequest {
    GetList {
        timeout: u16,
        targets: Vec<ProxyTarget<Oad>>,
    },
    GetRecord {
        timeout: u16,
        tsa: Tsa,
        record: Box<GetRecord>,
    },
    SetList {
        timeout: u16,
        targets: Vec<ProxyTarget<(Oad, Data)>>,
    },
    SetThenGetList {
        timeout: u16,
        targets: Vec<ProxyTarget<ThenGet<Oad>>>,
    },
    ActionList {
        timeout: u16,
        targets: Vec<ProxyTarget<(Omd, Data)>>,
    },
    ActionThenGetList {
        timeout: u16,
        targets: Vec<ProxyTarget<ThenGet<Omd>>>,
    },
    /// A raw frame for a port (F201 RS-485, F209 carrier…), with its line settings, the
    /// wait for a reply (s) and between bytes (ms).
    TransCommand {
        port: Oad,
        comdcb: [u8; 5],
        timeout: u16,
        byte_timeout: u16,
        command: Vec<u8>,
    },
}

#[derive(Clone, PartialEq, Debug)]
pub enum ProxyResponse {
    GetList(Vec<(Tsa, Vec<ResultNormal>)>),
    GetRecord {
        tsa: Tsa,
        record: ResultRecord,
    },
    SetList(Vec<(Tsa, Vec<(Oad, Dar)>)>),
    SetThenGetList(Vec<(Tsa, Vec<SetThenGetResult>)>),
    ActionList(Vec<(Tsa, Vec<ActionResult>)>),
    ActionThenGetList(Vec<(Tsa, Vec<(ActionResult, ResultNormal)>)>),
    TransCommand {
        port: Oad,
        result: Result<Vec<u8>, Dar>,
    },
}

/// CONNECT's negotiated sizes (frames and APDUs in bytes, timeout in s).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Negotiation {
    pub version: u16,
    pub protocol_conformance: [u8; 8],
    pub function_conformance: [u8; 16],
    pub send_max: u16,
    pub recv_max: u16,
    pub window: u8,
    pub apdu_max: u16,
    pub timeout: u32,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConnectMechanism {
    Public,
    Password(Vec<u8>),
    Symmetric { cipher: Vec<u8>, signature: Vec<u8> },
    Signature { cipher: Vec<u8>, signature: Vec<u8> },
}

#[derive(Clone, PartialEq, Debug)]
pub enum ClientService {
    Connect {
        negotiation: Negotiation,
        mechanism: ConnectMechanism,
    },
    Release,
    Get(GetRequest),
    Set(SetRequest),
    Action(ActionRequest),
    ReportResponse(ReportResponse),
    Proxy(ProxyRequest),
}

#[derive(Clone, PartialEq, Debug)]
pub enum ServerService {
    Connect {
        /// Vendor, software and hardware versions and dates: 32 bytes of fixed-size strings.
        factory: [u8; 32],
        negotiation: Negotiation,
        result: u8,
        /// Server RN and signature.
        security: Option<(Vec<u8>, Vec<u8>)>,
    },
    Release {
        result: u8,
    },
    ReleaseNotification {
        since: DateTimeS,
        now: DateTimeS,
    },
    Get(GetResponse),
    Set(SetResponse),
    Action(ActionResponse),
    Report(ReportNotification),
    Proxy(ProxyResponse),
    /// ERROR-Response: 1 APDU unparsable, 2 service unsupported, 255 other.
    Error {
        kind: u8,
    },
}

/// What a SECURITY-Request carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Payload {
    Plain(Vec<u8>),
    Cipher(Vec<u8>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RequestVerification {
    SidMac { sid: Sid, mac: Vec<u8> },
    Rn(Vec<u8>),
    RnMac { rn: Vec<u8>, mac: Vec<u8> },
    Sid(Sid),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResponsePayload {
    Plain(Vec<u8>),
    Cipher(Vec<u8>),
    Dar(Dar),
}

#[derive(Clone, PartialEq, Debug)]
pub enum Apdu {
    /// Terminal → master: 0 login, 1 heartbeat, 2 logout.
    LinkRequest {
        piid: u8,
        kind: u8,
        heartbeat: u16,
        time: DateTime,
    },
    /// Master → terminal: result (low 3 bits; bit 7 = clock trustworthy) and three times.
    LinkResponse {
        piid: u8,
        result: u8,
        request: DateTime,
        received: DateTime,
        responded: DateTime,
    },
    Client {
        piid: u8,
        service: ClientService,
        time_tag: Option<TimeTag>,
    },
    Server {
        piid: u8,
        service: ServerService,
        follow: Option<FollowReport>,
        time_tag: Option<TimeTag>,
    },
    SecurityRequest {
        payload: Payload,
        verification: RequestVerification,
    },
    /// The MAC is carried and shown, never verified: that takes the meter's ESAM.
    SecurityResponse {
        payload: ResponsePayload,
        mac: Option<Vec<u8>>,
    },
}

impl Apdu {
    /// Exactly one APDU: trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> R<Apdu> {
        let mut r = Reader::new(bytes);
        let a = read_apdu(&mut r)?;
        r.finish()?;
        Ok(a)
    }

    pub fn encode(&self) -> R<Vec<u8>> {
        let mut w = Writer::default();
        write_apdu(&mut w, self)?;
        Ok(w.out)
    }

    /// A GET-Request-Normal of one OAD.
    pub fn get(piid: u8, oad: Oad) -> Apdu {
        Apdu::Client {
            piid,
            service: ClientService::Get(GetRequest::Normal(oad)),
            time_tag: None,
        }
    }

    /// A GET-Request-NormalList.
    pub fn get_list(piid: u8, oads: Vec<Oad>) -> Apdu {
        Apdu::Client {
            piid,
            service: ClientService::Get(GetRequest::NormalList(oads)),
            time_tag: None,
        }
    }

    /// This APDU wrapped in a SECURITY-Request, plaintext with a random number.
    pub fn secured(&self, rn: Vec<u8>) -> R<Apdu> {
        Ok(Apdu::SecurityRequest {
            payload: Payload::Plain(self.encode()?),
            verification: RequestVerification::Rn(rn),
        })
    }

    /// The plaintext APDU inside a SECURITY wrapper (None for ciphertext, a DAR or no wrapper).
    pub fn unwrap_plain(&self) -> Option<R<Apdu>> {
        match self {
            Apdu::SecurityRequest {
                payload: Payload::Plain(p),
                ..
            }
            | Apdu::SecurityResponse {
                payload: ResponsePayload::Plain(p),
                ..
            } => Some(Apdu::decode(p)),
            _ => None,
        }
    }

    /// The PIID byte (PIID-ACD in server APDUs); None for SECURITY.
    pub fn piid(&self) -> Option<u8> {
        match self {
            Apdu::LinkRequest { piid, .. }
            | Apdu::LinkResponse { piid, .. }
            | Apdu::Client { piid, .. }
            | Apdu::Server { piid, .. } => Some(*piid),
            _ => None,
        }
    }

    /// The service's name as the notes print it (`GET-Response-NormalList`).
    pub fn name(&self) -> &'static str {
        match self {
            Apdu::LinkRequest { .. } => "LINK-Request",
            Apdu::LinkResponse { .. } => "LINK-Response",
            Apdu::SecurityRequest { .. } => "SECURITY-Request",
            Apdu::SecurityResponse { .. } => "SECURITY-Response",
            Apdu::Client { service, .. } => match service {
                ClientService::Connect { .. } => "CONNECT-Request",
                ClientService::Release => "RELEASE-Request",
                ClientService::Get(g) => match g {
                    GetRequest::Normal(_) => "GET-Request-Normal",
                    GetRequest::NormalList(_) => "GET-Request-NormalList",
                    GetRequest::Record(_) => "GET-Request-Record",
                    GetRequest::RecordList(_) => "GET-Request-RecordList",
                    GetRequest::Next(_) => "GET-Request-Next",
                    GetRequest::Md5(_) => "GET-Request-MD5",
                },
                ClientService::Set(s) => match s {
                    SetRequest::Normal(..) => "SET-Request-Normal",
                    SetRequest::NormalList(_) => "SET-Request-NormalList",
                    SetRequest::ThenGet(_) => "SET-Then-Get-Request",
                },
                ClientService::Action(a) => match a {
                    ActionRequest::Normal(..) => "ACTION-Request-Normal",
                    ActionRequest::NormalList(_) => "ACTION-Request-NormalList",
                    ActionRequest::ThenGet(_) => "ACTION-Then-Get-Request",
                },
                ClientService::ReportResponse(r) => match r {
                    ReportResponse::List(_) => "REPORT-Response-List",
                    ReportResponse::RecordList(_) => "REPORT-Response-RecordList",
                    ReportResponse::TransData => "REPORT-Response-TransData",
                },
                ClientService::Proxy(p) => match p {
                    ProxyRequest::GetList { .. } => "PROXY-Request-GetList",
                    ProxyRequest::GetRecord { .. } => "PROXY-Request-GetRecord",
                    ProxyRequest::SetList { .. } => "PROXY-Request-SetList",
                    ProxyRequest::SetThenGetList { .. } => "PROXY-Request-SetThenGetList",
                    ProxyRequest::ActionList { .. } => "PROXY-Request-ActionList",
                    ProxyRequest::ActionThenGetList { .. } => "PROXY-Request-ActionThenGetList",
                    ProxyRequest::TransCommand { .. } => "PROXY-Request-TransCommand",
                },
            },
            Apdu::Server { service, .. } => match service {
                ServerService::Connect { .. } => "CONNECT-Response",
                ServerService::Release { .. } => "RELEASE-Response",
                ServerService::ReleaseNotification { .. } => "RELEASE-Notification",
                ServerService::Error { .. } => "ERROR-Response",
                ServerService::Get(g) => match g {
                    GetResponse::Normal(_) => "GET-Response-Normal",
                    GetResponse::NormalList(_) => "GET-Response-NormalList",
                    GetResponse::Record(_) => "GET-Response-Record",
                    GetResponse::RecordList(_) => "GET-Response-RecordList",
                    GetResponse::Next { .. } => "GET-Response-Next",
                    GetResponse::Md5 { .. } => "GET-Response-MD5",
                },
                ServerService::Set(s) => match s {
                    SetResponse::Normal(..) => "SET-Response-Normal",
                    SetResponse::NormalList(_) => "SET-Response-NormalList",
                    SetResponse::ThenGet(_) => "SET-Then-Get-Response",
                },
                ServerService::Action(a) => match a {
                    ActionResponse::Normal(_) => "ACTION-Response-Normal",
                    ActionResponse::NormalList(_) => "ACTION-Response-NormalList",
                    ActionResponse::ThenGet(_) => "ACTION-Then-Get-Response",
                },
                ServerService::Report(r) => match r {
                    ReportNotification::List(_) => "REPORT-Notification-List",
                    ReportNotification::RecordList(_) => "REPORT-Notification-RecordList",
                    ReportNotification::TransData { .. } => "REPORT-Notification-TransData",
                },
                ServerService::Proxy(p) => match p {
                    ProxyResponse::GetList(_) => "PROXY-Response-GetList",
                    ProxyResponse::GetRecord { .. } => "PROXY-Response-GetRecord",
                    ProxyResponse::SetList(_) => "PROXY-Response-SetList",
                    ProxyResponse::SetThenGetList(_) => "PROXY-Response-SetThenGetList",
                    ProxyResponse::ActionList(_) => "PROXY-Response-ActionList",
                    ProxyResponse::ActionThenGetList(_) => "PROXY-Response-ActionThenGetList",
                    ProxyResponse::TransCommand { .. } => "PROXY-Response-TransCommand",
                },
            },
        }
    }
}

// ---- decoding ----

fn read_dar(r: &mut Reader) -> R<Dar> {
    Ok(Dar(r.u8("DAR")?))
}

fn read_get_result(r: &mut Reader) -> R<GetResult> {
    match r.u8("Get-Result")? {
        0 => Ok(GetResult::Dar(read_dar(r)?)),
        1 => Ok(GetResult::Data(read_data(r)?)),
        c => Err(r.unknown("Get-Result", c)),
    }
}

fn read_result_normal(r: &mut Reader) -> R<ResultNormal> {
    Ok(ResultNormal {
        oad: read_oad(r)?,
        result: read_get_result(r)?,
    })
}

fn read_result_record(r: &mut Reader) -> R<ResultRecord> {
    let oad = read_oad(r)?;
    let columns = read_rcsd(r)?;
    let result = match r.u8("record result")? {
        0 => RecordResult::Dar(read_dar(r)?),
        1 => {
            let width = columns.len();
            RecordResult::Rows(r.seq("record rows", |r| {
                let mut row = Vec::with_capacity(width.min(r.remaining()));
                for _ in 0..width {
                    row.push(read_data(r)?);
                }
                Ok(row)
            })?)
        }
        c => return Err(r.unknown("record result", c)),
    };
    Ok(ResultRecord {
        oad,
        columns,
        result,
    })
}

fn read_get_record(r: &mut Reader) -> R<GetRecord> {
    Ok(GetRecord {
        oad: read_oad(r)?,
        rsd: read_rsd(r)?,
        columns: read_rcsd(r)?,
    })
}

fn read_time_tag(r: &mut Reader) -> R<Option<TimeTag>> {
    r.optional("TimeTag", |r| {
        Ok(TimeTag {
            sent: read_dts(r)?,
            delay: read_ti(r)?,
        })
    })
}

fn read_follow(r: &mut Reader) -> R<Option<FollowReport>> {
    r.optional("FollowReport", |r| match r.u8("FollowReport")? {
        1 => Ok(FollowReport::Normal(
            r.seq("FollowReport", read_result_normal)?,
        )),
        2 => Ok(FollowReport::Record(
            r.seq("FollowReport", read_result_record)?,
        )),
        c => Err(r.unknown("FollowReport", c)),
    })
}

fn read_negotiation(r: &mut Reader) -> R<Negotiation> {
    Ok(Negotiation {
        version: r.u16("protocol version")?,
        protocol_conformance: r.array("protocol conformance")?,
        function_conformance: r.array("function conformance")?,
        send_max: r.u16("send frame size")?,
        recv_max: r.u16("receive frame size")?,
        window: r.u8("receive window")?,
        apdu_max: r.u16("APDU size")?,
        timeout: r.u32("association timeout")?,
    })
}

fn read_then_get<T>(r: &mut Reader, target: impl Fn(&mut Reader) -> R<T>) -> R<ThenGet<T>> {
    Ok(ThenGet {
        target: target(r)?,
        data: read_data(r)?,
        get: read_oad(r)?,
        delay: r.u8("read-back delay")?,
    })
}

fn read_action_result(r: &mut Reader) -> R<ActionResult> {
    Ok(ActionResult {
        omd: Omd::read(r)?,
        dar: read_dar(r)?,
        data: r.optional("ACTION return data", read_data)?,
    })
}

fn read_proxy_targets<T>(
    r: &mut Reader,
    item: impl Fn(&mut Reader) -> R<T> + Copy,
) -> R<Vec<ProxyTarget<T>>> {
    r.seq("PROXY meters", |r| {
        Ok(ProxyTarget {
            tsa: read_tsa(r)?,
            timeout: r.u16("PROXY meter timeout")?,
            items: r.seq("PROXY items", item)?,
        })
    })
}

fn read_set_item(r: &mut Reader) -> R<(Oad, Data)> {
    Ok((read_oad(r)?, read_data(r)?))
}

fn read_action_item(r: &mut Reader) -> R<(Omd, Data)> {
    Ok((Omd::read(r)?, read_data(r)?))
}

fn read_set_then_get_result(r: &mut Reader) -> R<SetThenGetResult> {
    Ok((read_oad(r)?, read_dar(r)?, read_result_normal(r)?))
}

fn read_action_then_get_result(r: &mut Reader) -> R<(ActionResult, ResultNormal)> {
    Ok((read_action_result(r)?, read_result_normal(r)?))
}

fn read_client(r: &mut Reader, tag: u8) -> R<(u8, ClientService)> {
    if matches!(tag, 2 | 3) {
        let piid = r.u8("PIID")?;
        let service = if tag == 3 {
            ClientService::Release
        } else {
            let negotiation = read_negotiation(r)?;
            let mechanism = match r.u8("connect mechanism")? {
                0 => ConnectMechanism::Public,
                1 => ConnectMechanism::Password(r.octets("password")?),
                2 => ConnectMechanism::Symmetric {
                    cipher: r.octets("ciphertext")?,
                    signature: r.octets("signature")?,
                },
                3 => ConnectMechanism::Signature {
                    cipher: r.octets("ciphertext")?,
                    signature: r.octets("signature")?,
                },
                c => return Err(r.unknown("connect mechanism", c)),
            };
            ClientService::Connect {
                negotiation,
                mechanism,
            }
        };
        return Ok((piid, service));
    }
    let choice = r.u8("service choice")?;
    let piid = r.u8("PIID")?;
    let bad = |r: &Reader| r.unknown("service choice", choice);
    let service = match tag {
        5 => ClientService::Get(match choice {
            1 => GetRequest::Normal(read_oad(r)?),
            2 => GetRequest::NormalList(r.seq("OADs", read_oad)?),
            3 => GetRequest::Record(read_get_record(r)?),
            4 => GetRequest::RecordList(r.seq("records", read_get_record)?),
            5 => GetRequest::Next(r.u16("block number")?),
            6 => GetRequest::Md5(read_oad(r)?),
            _ => return Err(bad(r)),
        }),
        6 => ClientService::Set(match choice {
            1 => SetRequest::Normal(read_oad(r)?, read_data(r)?),
            2 => SetRequest::NormalList(r.seq("SET items", read_set_item)?),
            3 => SetRequest::ThenGet(r.seq("SET items", |r| read_then_get(r, read_oad))?),
            _ => return Err(bad(r)),
        }),
        7 => ClientService::Action(match choice {
            1 => ActionRequest::Normal(Omd::read(r)?, read_data(r)?),
            2 => ActionRequest::NormalList(r.seq("ACTION items", read_action_item)?),
            3 => ActionRequest::ThenGet(r.seq("ACTION items", |r| read_then_get(r, Omd::read))?),
            _ => return Err(bad(r)),
        }),
        8 => ClientService::ReportResponse(match choice {
            1 => ReportResponse::List(r.seq("OADs", read_oad)?),
            2 => ReportResponse::RecordList(r.seq("OADs", read_oad)?),
            3 => ReportResponse::TransData,
            _ => return Err(bad(r)),
        }),
        9 => {
            let p = match choice {
                1 => ProxyRequest::GetList {
                    timeout: r.u16("PROXY timeout")?,
                    targets: read_proxy_targets(r, read_oad)?,
                },
                2 => ProxyRequest::GetRecord {
                    timeout: r.u16("PROXY timeout")?,
                    tsa: read_tsa(r)?,
                    record: Box::new(read_get_record(r)?),
                },
                3 => ProxyRequest::SetList {
                    timeout: r.u16("PROXY timeout")?,
                    targets: read_proxy_targets(r, read_set_item)?,
                },
                4 => ProxyRequest::SetThenGetList {
                    timeout: r.u16("PROXY timeout")?,
                    targets: read_proxy_targets(r, |r| read_then_get(r, read_oad))?,
                },
                5 => ProxyRequest::ActionList {
                    timeout: r.u16("PROXY timeout")?,
                    targets: read_proxy_targets(r, read_action_item)?,
                },
                6 => ProxyRequest::ActionThenGetList {
                    timeout: r.u16("PROXY timeout")?,
                    targets: read_proxy_targets(r, |r| read_then_get(r, Omd::read))?,
                },
                7 => ProxyRequest::TransCommand {
                    port: read_oad(r)?,
                    comdcb: r.array("COMDCB")?,
                    timeout: r.u16("PROXY timeout")?,
                    byte_timeout: r.u16("PROXY byte timeout")?,
                    command: r.octets("PROXY command")?,
                },
                _ => return Err(bad(r)),
            };
            ClientService::Proxy(p)
        }
        _ => return Err(Dlt698Error::UnknownApdu { tag }),
    };
    Ok((piid, service))
}

fn read_server(r: &mut Reader, tag: u8) -> R<(u8, ServerService)> {
    match tag {
        0x82 => {
            let piid = r.u8("PIID-ACD")?;
            let factory = r.array("factory version")?;
            let negotiation = read_negotiation(r)?;
            let result = r.u8("connect result")?;
            let security = r.optional("security data", |r| {
                Ok((r.octets("server RN")?, r.octets("server signature")?))
            })?;
            return Ok((
                piid,
                ServerService::Connect {
                    factory,
                    negotiation,
                    result,
                    security,
                },
            ));
        }
        0x83 => {
            let piid = r.u8("PIID-ACD")?;
            let result = r.u8("release result")?;
            return Ok((piid, ServerService::Release { result }));
        }
        0x84 => {
            let piid = r.u8("PIID-ACD")?;
            let since = read_dts(r)?;
            let now = read_dts(r)?;
            return Ok((piid, ServerService::ReleaseNotification { since, now }));
        }
        0xEE => {
            let piid = r.u8("PIID-ACD")?;
            let kind = r.u8("error type")?;
            return Ok((piid, ServerService::Error { kind }));
        }
        _ => {}
    }
    let choice = r.u8("service choice")?;
    let piid = r.u8("PIID-ACD")?;
    let bad = |r: &Reader| r.unknown("service choice", choice);
    let service = match tag {
        0x85 => ServerService::Get(match choice {
            1 => GetResponse::Normal(read_result_normal(r)?),
            2 => GetResponse::NormalList(r.seq("results", read_result_normal)?),
            3 => GetResponse::Record(read_result_record(r)?),
            4 => GetResponse::RecordList(r.seq("records", read_result_record)?),
            5 => {
                let at = r.pos();
                let last = r.u8("last-block flag")?;
                if last > 1 {
                    return Err(Dlt698Error::OutOfRange {
                        what: "last-block flag",
                        offset: at,
                        value: u32::from(last),
                    });
                }
                let block = r.u16("block number")?;
                let result = match r.u8("block result")? {
                    0 => NextResult::Dar(read_dar(r)?),
                    1 => NextResult::Normal(r.seq("results", read_result_normal)?),
                    2 => NextResult::Record(r.seq("records", read_result_record)?),
                    c => return Err(r.unknown("block result", c)),
                };
                GetResponse::Next {
                    last: last == 1,
                    block,
                    result,
                }
            }
            6 => {
                let oad = read_oad(r)?;
                let result = match r.u8("MD5 result")? {
                    0 => Err(read_dar(r)?),
                    1 => Ok(r.octets("MD5")?),
                    c => return Err(r.unknown("MD5 result", c)),
                };
                GetResponse::Md5 { oad, result }
            }
            _ => return Err(bad(r)),
        }),
        0x86 => ServerService::Set(match choice {
            1 => SetResponse::Normal(read_oad(r)?, read_dar(r)?),
            2 => SetResponse::NormalList(r.seq("results", |r| Ok((read_oad(r)?, read_dar(r)?)))?),
            3 => SetResponse::ThenGet(r.seq("results", read_set_then_get_result)?),
            _ => return Err(bad(r)),
        }),
        0x87 => ServerService::Action(match choice {
            1 => ActionResponse::Normal(read_action_result(r)?),
            2 => ActionResponse::NormalList(r.seq("results", read_action_result)?),
            3 => ActionResponse::ThenGet(r.seq("results", read_action_then_get_result)?),
            _ => return Err(bad(r)),
        }),
        0x88 => ServerService::Report(match choice {
            1 => ReportNotification::List(r.seq("results", read_result_normal)?),
            2 => ReportNotification::RecordList(r.seq("records", read_result_record)?),
            3 => ReportNotification::TransData {
                port: read_oad(r)?,
                data: r.seq("transparent data", |r| r.octets("transparent data"))?,
            },
            _ => return Err(bad(r)),
        }),
        0x89 => ServerService::Proxy(match choice {
            1 => ProxyResponse::GetList(r.seq("PROXY meters", |r| {
                Ok((read_tsa(r)?, r.seq("results", read_result_normal)?))
            })?),
            2 => ProxyResponse::GetRecord {
                tsa: read_tsa(r)?,
                record: read_result_record(r)?,
            },
            3 => ProxyResponse::SetList(r.seq("PROXY meters", |r| {
                Ok((
                    read_tsa(r)?,
                    r.seq("results", |r| Ok((read_oad(r)?, read_dar(r)?)))?,
                ))
            })?),
            4 => ProxyResponse::SetThenGetList(r.seq("PROXY meters", |r| {
                Ok((read_tsa(r)?, r.seq("results", read_set_then_get_result)?))
            })?),
            5 => ProxyResponse::ActionList(r.seq("PROXY meters", |r| {
                Ok((read_tsa(r)?, r.seq("results", read_action_result)?))
            })?),
            6 => ProxyResponse::ActionThenGetList(r.seq("PROXY meters", |r| {
                Ok((read_tsa(r)?, r.seq("results", read_action_then_get_result)?))
            })?),
            7 => {
                let port = read_oad(r)?;
                let result = match r.u8("PROXY result")? {
                    0 => Err(read_dar(r)?),
                    1 => Ok(r.octets("PROXY reply")?),
                    c => return Err(r.unknown("PROXY result", c)),
                };
                ProxyResponse::TransCommand { port, result }
            }
            _ => return Err(bad(r)),
        }),
        _ => return Err(Dlt698Error::UnknownApdu { tag }),
    };
    Ok((piid, service))
}

fn read_apdu(r: &mut Reader) -> R<Apdu> {
    let tag = r.u8("APDU tag")?;
    match tag {
        0x01 => Ok(Apdu::LinkRequest {
            piid: r.u8("PIID-ACD")?,
            kind: r.u8("LINK request type")?,
            heartbeat: r.u16("heartbeat period")?,
            time: read_date_time(r)?,
        }),
        0x81 => Ok(Apdu::LinkResponse {
            piid: r.u8("PIID")?,
            result: r.u8("LINK result")?,
            request: read_date_time(r)?,
            received: read_date_time(r)?,
            responded: read_date_time(r)?,
        }),
        0x10 => {
            let payload = match r.u8("SECURITY data")? {
                0 => Payload::Plain(r.octets("plaintext APDU")?),
                1 => Payload::Cipher(r.octets("ciphertext")?),
                c => return Err(r.unknown("SECURITY data", c)),
            };
            let verification = match r.u8("SECURITY verification")? {
                0 => {
                    let (sid, mac) = read_sid_mac(r)?;
                    RequestVerification::SidMac { sid, mac }
                }
                1 => RequestVerification::Rn(r.octets("RN")?),
                2 => RequestVerification::RnMac {
                    rn: r.octets("RN")?,
                    mac: r.octets("MAC")?,
                },
                3 => RequestVerification::Sid(Sid {
                    ident: r.u32("SID")?,
                    extra: r.octets("SID data")?,
                }),
                c => return Err(r.unknown("SECURITY verification", c)),
            };
            Ok(Apdu::SecurityRequest {
                payload,
                verification,
            })
        }
        0x90 => {
            let payload = match r.u8("SECURITY data")? {
                0 => ResponsePayload::Plain(r.octets("plaintext APDU")?),
                1 => ResponsePayload::Cipher(r.octets("ciphertext")?),
                2 => ResponsePayload::Dar(read_dar(r)?),
                c => return Err(r.unknown("SECURITY data", c)),
            };
            let mac = r.optional("SECURITY verification", |r| match r.u8("verification")? {
                0 => r.octets("MAC"),
                c => Err(r.unknown("SECURITY verification", c)),
            })?;
            Ok(Apdu::SecurityResponse { payload, mac })
        }
        2..=9 => {
            let (piid, service) = read_client(r, tag)?;
            let time_tag = read_time_tag(r)?;
            Ok(Apdu::Client {
                piid,
                service,
                time_tag,
            })
        }
        0x82..=0x89 | 0xEE => {
            let (piid, service) = read_server(r, tag)?;
            let follow = read_follow(r)?;
            let time_tag = read_time_tag(r)?;
            Ok(Apdu::Server {
                piid,
                service,
                follow,
                time_tag,
            })
        }
        _ => Err(Dlt698Error::UnknownApdu { tag }),
    }
}

// ---- encoding ----

fn write_get_result(w: &mut Writer, g: &GetResult) -> R<()> {
    match g {
        GetResult::Dar(d) => {
            w.u8(0);
            w.u8(d.0);
            Ok(())
        }
        GetResult::Data(d) => {
            w.u8(1);
            write_data(w, d)
        }
    }
}

fn write_result_normal(w: &mut Writer, r: &ResultNormal) -> R<()> {
    write_oad(w, &r.oad);
    write_get_result(w, &r.result)
}

fn write_result_record(w: &mut Writer, r: &ResultRecord) -> R<()> {
    write_oad(w, &r.oad);
    write_rcsd(w, &r.columns)?;
    match &r.result {
        RecordResult::Dar(d) => {
            w.u8(0);
            w.u8(d.0);
        }
        RecordResult::Rows(rows) => {
            w.u8(1);
            w.seq(rows, |w, row| {
                if row.len() != r.columns.len() {
                    return Err(Dlt698Error::TooLong {
                        what: "record row for its columns",
                        len: row.len(),
                    });
                }
                row.iter().try_for_each(|d| write_data(w, d))
            })?;
        }
    }
    Ok(())
}

fn write_get_record(w: &mut Writer, g: &GetRecord) -> R<()> {
    write_oad(w, &g.oad);
    write_rsd(w, &g.rsd)?;
    write_rcsd(w, &g.columns)
}

fn write_time_tag(w: &mut Writer, t: &Option<TimeTag>) -> R<()> {
    w.optional(t, |w, t| {
        write_dts(w, &t.sent);
        write_ti(w, &t.delay);
        Ok(())
    })
}

fn write_negotiation(w: &mut Writer, n: &Negotiation) {
    w.u16(n.version);
    w.bytes(&n.protocol_conformance);
    w.bytes(&n.function_conformance);
    w.u16(n.send_max);
    w.u16(n.recv_max);
    w.u8(n.window);
    w.u16(n.apdu_max);
    w.u32(n.timeout);
}

fn write_then_get<T>(w: &mut Writer, t: &ThenGet<T>, target: impl Fn(&mut Writer, &T)) -> R<()> {
    target(w, &t.target);
    write_data(w, &t.data)?;
    write_oad(w, &t.get);
    w.u8(t.delay);
    Ok(())
}

fn write_omd(w: &mut Writer, o: &Omd) {
    o.write(w);
}

fn write_action_result(w: &mut Writer, a: &ActionResult) -> R<()> {
    a.omd.write(w);
    w.u8(a.dar.0);
    w.optional(&a.data, write_data)
}

fn write_proxy_targets<T>(
    w: &mut Writer,
    targets: &[ProxyTarget<T>],
    item: impl Fn(&mut Writer, &T) -> R<()> + Copy,
) -> R<()> {
    w.seq(targets, |w, t| {
        write_tsa(w, &t.tsa)?;
        w.u16(t.timeout);
        w.seq(&t.items, item)
    })
}

fn write_oad_dar(w: &mut Writer, (o, d): &(Oad, Dar)) -> R<()> {
    write_oad(w, o);
    w.u8(d.0);
    Ok(())
}

fn write_set_then_get_result(w: &mut Writer, (o, d, r): &SetThenGetResult) -> R<()> {
    write_oad(w, o);
    w.u8(d.0);
    write_result_normal(w, r)
}

fn write_action_then_get_result(w: &mut Writer, (a, r): &(ActionResult, ResultNormal)) -> R<()> {
    write_action_result(w, a)?;
    write_result_normal(w, r)
}

fn write_client(w: &mut Writer, piid: u8, s: &ClientService) -> R<()> {
    let oads = |w: &mut Writer, v: &Vec<Oad>| {
        w.seq(v, |w, o| {
            write_oad(w, o);
            Ok(())
        })
    };
    let head = |w: &mut Writer, tag: u8, choice: u8| {
        w.bytes(&[tag, choice, piid]);
    };
    match s {
        ClientService::Connect {
            negotiation,
            mechanism,
        } => {
            w.bytes(&[2, piid]);
            write_negotiation(w, negotiation);
            match mechanism {
                ConnectMechanism::Public => w.u8(0),
                ConnectMechanism::Password(p) => {
                    w.u8(1);
                    w.octets(p)?;
                }
                ConnectMechanism::Symmetric { cipher, signature }
                | ConnectMechanism::Signature { cipher, signature } => {
                    w.u8(if matches!(mechanism, ConnectMechanism::Symmetric { .. }) {
                        2
                    } else {
                        3
                    });
                    w.octets(cipher)?;
                    w.octets(signature)?;
                }
            }
        }
        ClientService::Release => w.bytes(&[3, piid]),
        ClientService::Get(g) => match g {
            GetRequest::Normal(o) => {
                head(w, 5, 1);
                write_oad(w, o);
            }
            GetRequest::NormalList(v) => {
                head(w, 5, 2);
                oads(w, v)?;
            }
            GetRequest::Record(g) => {
                head(w, 5, 3);
                write_get_record(w, g)?;
            }
            GetRequest::RecordList(v) => {
                head(w, 5, 4);
                w.seq(v, write_get_record)?;
            }
            GetRequest::Next(n) => {
                head(w, 5, 5);
                w.u16(*n);
            }
            GetRequest::Md5(o) => {
                head(w, 5, 6);
                write_oad(w, o);
            }
        },
        ClientService::Set(s) => match s {
            SetRequest::Normal(o, d) => {
                head(w, 6, 1);
                write_oad(w, o);
                write_data(w, d)?;
            }
            SetRequest::NormalList(v) => {
                head(w, 6, 2);
                w.seq(v, |w, (o, d)| {
                    write_oad(w, o);
                    write_data(w, d)
                })?;
            }
            SetRequest::ThenGet(v) => {
                head(w, 6, 3);
                w.seq(v, |w, t| write_then_get(w, t, write_oad))?;
            }
        },
        ClientService::Action(a) => match a {
            ActionRequest::Normal(o, d) => {
                head(w, 7, 1);
                o.write(w);
                write_data(w, d)?;
            }
            ActionRequest::NormalList(v) => {
                head(w, 7, 2);
                w.seq(v, |w, (o, d)| {
                    o.write(w);
                    write_data(w, d)
                })?;
            }
            ActionRequest::ThenGet(v) => {
                head(w, 7, 3);
                w.seq(v, |w, t| write_then_get(w, t, write_omd))?;
            }
        },
        ClientService::ReportResponse(rr) => match rr {
            ReportResponse::List(v) => {
                head(w, 8, 1);
                oads(w, v)?;
            }
            ReportResponse::RecordList(v) => {
                head(w, 8, 2);
                oads(w, v)?;
            }
            ReportResponse::TransData => head(w, 8, 3),
        },
        ClientService::Proxy(p) => match p {
            ProxyRequest::GetList { timeout, targets } => {
                head(w, 9, 1);
                w.u16(*timeout);
                write_proxy_targets(w, targets, |w, o| {
                    write_oad(w, o);
                    Ok(())
                })?;
            }
            ProxyRequest::GetRecord {
                timeout,
                tsa,
                record,
            } => {
                head(w, 9, 2);
                w.u16(*timeout);
                write_tsa(w, tsa)?;
                write_get_record(w, record)?;
            }
            ProxyRequest::SetList { timeout, targets } => {
                head(w, 9, 3);
                w.u16(*timeout);
                write_proxy_targets(w, targets, |w, (o, d)| {
                    write_oad(w, o);
                    write_data(w, d)
                })?;
            }
            ProxyRequest::SetThenGetList { timeout, targets } => {
                head(w, 9, 4);
                w.u16(*timeout);
                write_proxy_targets(w, targets, |w, t| write_then_get(w, t, write_oad))?;
            }
            ProxyRequest::ActionList { timeout, targets } => {
                head(w, 9, 5);
                w.u16(*timeout);
                write_proxy_targets(w, targets, |w, (o, d)| {
                    o.write(w);
                    write_data(w, d)
                })?;
            }
            ProxyRequest::ActionThenGetList { timeout, targets } => {
                head(w, 9, 6);
                w.u16(*timeout);
                write_proxy_targets(w, targets, |w, t| write_then_get(w, t, write_omd))?;
            }
            ProxyRequest::TransCommand {
                port,
                comdcb,
                timeout,
                byte_timeout,
                command,
            } => {
                head(w, 9, 7);
                write_oad(w, port);
                w.bytes(comdcb);
                w.u16(*timeout);
                w.u16(*byte_timeout);
                w.octets(command)?;
            }
        },
    }
    Ok(())
}

fn write_server(w: &mut Writer, piid: u8, s: &ServerService) -> R<()> {
    let head = |w: &mut Writer, tag: u8, choice: u8| {
        w.bytes(&[tag, choice, piid]);
    };
    match s {
        ServerService::Connect {
            factory,
            negotiation,
            result,
            security,
        } => {
            w.bytes(&[0x82, piid]);
            w.bytes(factory);
            write_negotiation(w, negotiation);
            w.u8(*result);
            w.optional(security, |w, (rn, sig)| {
                w.octets(rn)?;
                w.octets(sig)
            })?;
        }
        ServerService::Release { result } => w.bytes(&[0x83, piid, *result]),
        ServerService::ReleaseNotification { since, now } => {
            w.bytes(&[0x84, piid]);
            write_dts(w, since);
            write_dts(w, now);
        }
        ServerService::Error { kind } => w.bytes(&[0xEE, piid, *kind]),
        ServerService::Get(g) => match g {
            GetResponse::Normal(r) => {
                head(w, 0x85, 1);
                write_result_normal(w, r)?;
            }
            GetResponse::NormalList(v) => {
                head(w, 0x85, 2);
                w.seq(v, write_result_normal)?;
            }
            GetResponse::Record(r) => {
                head(w, 0x85, 3);
                write_result_record(w, r)?;
            }
            GetResponse::RecordList(v) => {
                head(w, 0x85, 4);
                w.seq(v, write_result_record)?;
            }
            GetResponse::Next {
                last,
                block,
                result,
            } => {
                head(w, 0x85, 5);
                w.u8(u8::from(*last));
                w.u16(*block);
                match result {
                    NextResult::Dar(d) => w.bytes(&[0, d.0]),
                    NextResult::Normal(v) => {
                        w.u8(1);
                        w.seq(v, write_result_normal)?;
                    }
                    NextResult::Record(v) => {
                        w.u8(2);
                        w.seq(v, write_result_record)?;
                    }
                }
            }
            GetResponse::Md5 { oad, result } => {
                head(w, 0x85, 6);
                write_oad(w, oad);
                match result {
                    Err(d) => w.bytes(&[0, d.0]),
                    Ok(md5) => {
                        w.u8(1);
                        w.octets(md5)?;
                    }
                }
            }
        },
        ServerService::Set(s) => match s {
            SetResponse::Normal(o, d) => {
                head(w, 0x86, 1);
                write_oad_dar(w, &(*o, *d))?;
            }
            SetResponse::NormalList(v) => {
                head(w, 0x86, 2);
                w.seq(v, write_oad_dar)?;
            }
            SetResponse::ThenGet(v) => {
                head(w, 0x86, 3);
                w.seq(v, write_set_then_get_result)?;
            }
        },
        ServerService::Action(a) => match a {
            ActionResponse::Normal(r) => {
                head(w, 0x87, 1);
                write_action_result(w, r)?;
            }
            ActionResponse::NormalList(v) => {
                head(w, 0x87, 2);
                w.seq(v, write_action_result)?;
            }
            ActionResponse::ThenGet(v) => {
                head(w, 0x87, 3);
                w.seq(v, write_action_then_get_result)?;
            }
        },
        ServerService::Report(rn) => match rn {
            ReportNotification::List(v) => {
                head(w, 0x88, 1);
                w.seq(v, write_result_normal)?;
            }
            ReportNotification::RecordList(v) => {
                head(w, 0x88, 2);
                w.seq(v, write_result_record)?;
            }
            ReportNotification::TransData { port, data } => {
                head(w, 0x88, 3);
                write_oad(w, port);
                w.seq(data, |w, d| w.octets(d))?;
            }
        },
        ServerService::Proxy(p) => match p {
            ProxyResponse::GetList(v) => {
                head(w, 0x89, 1);
                w.seq(v, |w, (t, rs)| {
                    write_tsa(w, t)?;
                    w.seq(rs, write_result_normal)
                })?;
            }
            ProxyResponse::GetRecord { tsa, record } => {
                head(w, 0x89, 2);
                write_tsa(w, tsa)?;
                write_result_record(w, record)?;
            }
            ProxyResponse::SetList(v) => {
                head(w, 0x89, 3);
                w.seq(v, |w, (t, rs)| {
                    write_tsa(w, t)?;
                    w.seq(rs, write_oad_dar)
                })?;
            }
            ProxyResponse::SetThenGetList(v) => {
                head(w, 0x89, 4);
                w.seq(v, |w, (t, rs)| {
                    write_tsa(w, t)?;
                    w.seq(rs, write_set_then_get_result)
                })?;
            }
            ProxyResponse::ActionList(v) => {
                head(w, 0x89, 5);
                w.seq(v, |w, (t, rs)| {
                    write_tsa(w, t)?;
                    w.seq(rs, write_action_result)
                })?;
            }
            ProxyResponse::ActionThenGetList(v) => {
                head(w, 0x89, 6);
                w.seq(v, |w, (t, rs)| {
                    write_tsa(w, t)?;
                    w.seq(rs, write_action_then_get_result)
                })?;
            }
            ProxyResponse::TransCommand { port, result } => {
                head(w, 0x89, 7);
                write_oad(w, port);
                match result {
                    Err(d) => w.bytes(&[0, d.0]),
                    Ok(b) => {
                        w.u8(1);
                        w.octets(b)?;
                    }
                }
            }
        },
    }
    Ok(())
}

fn write_apdu(w: &mut Writer, a: &Apdu) -> R<()> {
    match a {
        Apdu::LinkRequest {
            piid,
            kind,
            heartbeat,
            time,
        } => {
            w.bytes(&[0x01, *piid, *kind]);
            w.u16(*heartbeat);
            write_date_time(w, time);
        }
        Apdu::LinkResponse {
            piid,
            result,
            request,
            received,
            responded,
        } => {
            w.bytes(&[0x81, *piid, *result]);
            write_date_time(w, request);
            write_date_time(w, received);
            write_date_time(w, responded);
        }
        Apdu::Client {
            piid,
            service,
            time_tag,
        } => {
            write_client(w, *piid, service)?;
            write_time_tag(w, time_tag)?;
        }
        Apdu::Server {
            piid,
            service,
            follow,
            time_tag,
        } => {
            write_server(w, *piid, service)?;
            w.optional(follow, |w, f| match f {
                FollowReport::Normal(v) => {
                    w.u8(1);
                    w.seq(v, write_result_normal)
                }
                FollowReport::Record(v) => {
                    w.u8(2);
                    w.seq(v, write_result_record)
                }
            })?;
            write_time_tag(w, time_tag)?;
        }
        Apdu::SecurityRequest {
            payload,
            verification,
        } => {
            w.u8(0x10);
            match payload {
                Payload::Plain(p) => {
                    w.u8(0);
                    w.octets(p)?;
                }
                Payload::Cipher(p) => {
                    w.u8(1);
                    w.octets(p)?;
                }
            }
            match verification {
                RequestVerification::SidMac { sid, mac } => {
                    w.u8(0);
                    write_sid_mac(w, sid, mac)?;
                }
                RequestVerification::Rn(rn) => {
                    w.u8(1);
                    w.octets(rn)?;
                }
                RequestVerification::RnMac { rn, mac } => {
                    w.u8(2);
                    w.octets(rn)?;
                    w.octets(mac)?;
                }
                RequestVerification::Sid(sid) => {
                    w.u8(3);
                    w.u32(sid.ident);
                    w.octets(&sid.extra)?;
                }
            }
        }
        Apdu::SecurityResponse { payload, mac } => {
            w.u8(0x90);
            match payload {
                ResponsePayload::Plain(p) => {
                    w.u8(0);
                    w.octets(p)?;
                }
                ResponsePayload::Cipher(p) => {
                    w.u8(1);
                    w.octets(p)?;
                }
                ResponsePayload::Dar(d) => w.bytes(&[2, d.0]),
            }
            w.optional(mac, |w, m| {
                w.u8(0);
                w.octets(m)
            })?;
        }
    }
    Ok(())
}
