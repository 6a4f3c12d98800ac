//! The bus contract, written once as generic functions over a way to make
//! nodes, run here against the in-process hub.

use std::time::Duration;

use switchboard_bus::{Bus, Inbound, MemoryHub, RedisBus, RedisOptions};
use switchboard_protocol::{Message, RoomName};
use tokio::sync::mpsc;
use uuid::Uuid;

fn msg(room: &str, text: &str) -> Message {
    Message {
        id: Uuid::now_v7(),
        room: RoomName::parse(room).unwrap(),
        from: "a".into(),
        text: text.into(),
        ts: 1,
        seq: 0,
        epoch: String::new(),
        data: None,
        deleted: false,
    }
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Option<Message> {
    match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        Ok(Some(Inbound::Message(m))) => Some(m),
        Ok(Some(other)) => panic!("not a message: {other:?}"),
        _ => None,
    }
}

async fn delivers_to_interested_others_only(
    mut node: impl FnMut(mpsc::Sender<Inbound>) -> Box<dyn Bus>,
) {
    let (tx1, mut rx1) = mpsc::channel(16);
    let (tx2, mut rx2) = mpsc::channel(16);
    let (tx3, mut rx3) = mpsc::channel(16);
    let (a, b, c) = (node(tx1), node(tx2), node(tx3));
    a.subscribe(&room("r"));
    b.subscribe(&room("r"));
    c.subscribe(&room("other"));
    for n in [&a, &b, &c] {
        n.settled().await;
    }
    let m = msg("r", "one");
    a.publish(&m);
    assert_eq!(
        recv(&mut rx2).await,
        Some(m),
        "the other interested node receives it"
    );
    assert_eq!(
        recv(&mut rx1).await,
        None,
        "the publisher does not receive its own message"
    );
    assert_eq!(
        recv(&mut rx3).await,
        None,
        "a node without interest receives nothing"
    );
    drop((a, b, c));
}

async fn unsubscribe_stops_delivery(mut node: impl FnMut(mpsc::Sender<Inbound>) -> Box<dyn Bus>) {
    let (tx1, _rx1) = mpsc::channel(16);
    let (tx2, mut rx2) = mpsc::channel(16);
    let (a, b) = (node(tx1), node(tx2));
    b.subscribe(&room("r"));
    b.unsubscribe(&room("r"));
    b.settled().await;
    a.publish(&msg("r", "x"));
    assert_eq!(recv(&mut rx2).await, None);
}

async fn keeps_publish_order(mut node: impl FnMut(mpsc::Sender<Inbound>) -> Box<dyn Bus>) {
    let (tx1, _rx1) = mpsc::channel(16);
    let (tx2, mut rx2) = mpsc::channel(1024);
    let (a, b) = (node(tx1), node(tx2));
    b.subscribe(&room("r"));
    b.settled().await;
    let sent: Vec<Message> = (0..200).map(|i| msg("r", &i.to_string())).collect();
    for m in &sent {
        a.publish(m);
    }
    let mut got = Vec::new();
    while let Some(m) = recv(&mut rx2).await {
        got.push(m);
        if got.len() == sent.len() {
            break;
        }
    }
    assert_eq!(got, sent);
}

/// Runs every contract test with the node factory `$nodes`.
macro_rules! contract {
    ($nodes:ident) => {
        #[tokio::test]
        async fn delivers_to_interested_others_only() {
            super::delivers_to_interested_others_only($nodes()).await
        }
        #[tokio::test]
        async fn unsubscribe_stops_delivery() {
            super::unsubscribe_stops_delivery($nodes()).await
        }
        #[tokio::test]
        async fn keeps_publish_order() {
            super::keeps_publish_order($nodes()).await
        }
    };
}

mod memory {
    use super::*;

    fn nodes() -> impl FnMut(mpsc::Sender<Inbound>) -> Box<dyn Bus> {
        let hub = MemoryHub::new();
        move |inbox| Box::new(hub.attach(inbox))
    }

    contract!(nodes);

    #[tokio::test]
    async fn full_inbox_drops_instead_of_growing() {
        let hub = MemoryHub::new();
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(2);
        let (a, b) = (hub.attach(tx1), hub.attach(tx2));
        b.subscribe(&room("r"));
        for i in 0..10 {
            a.publish(&msg("r", &i.to_string()));
        }
        let mut n = 0;
        while recv(&mut rx2).await.is_some() {
            n += 1;
        }
        assert_eq!(n, 2, "only the inbox's capacity is delivered");
    }
}

/// Real Redis (the test script starts one); each test gets its own channel
/// prefix so tests run in parallel and reruns see no old traffic.
mod redis {
    use super::*;

    pub fn url() -> String {
        std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    fn nodes() -> impl FnMut(mpsc::Sender<Inbound>) -> Box<dyn Bus> {
        let prefix = format!("test-{}", Uuid::new_v4().simple());
        let token = tokio_util::sync::CancellationToken::new();
        let mut n = 0;
        move |inbox| {
            n += 1;
            let options = RedisOptions::new(url(), prefix.clone(), format!("node-{n}"));
            Box::new(RedisBus::start(options, inbox, &token).unwrap())
        }
    }

    contract!(nodes);

    #[tokio::test]
    async fn bad_urls_are_refused() {
        let (tx, _rx) = mpsc::channel(1);
        let options = RedisOptions::new("http://nope", "p", "n");
        assert!(RedisBus::start(options, tx, &tokio_util::sync::CancellationToken::new()).is_err());
    }
}
