//! Tokens, identities and the claims that bound joins and sends.

use super::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &[u8] = b"test-secret-of-enough-length-for-hs256";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

#[test]
fn a_valid_token_gives_its_name_and_rooms() {
    let v = TokenVerifier::hs256(SECRET);
    let id = v
        .verify(&token(json!({"sub": "u1", "name": "Alice", "exp": now() + 60, "rooms": ["general", "team-*"]})))
        .unwrap();
    assert_eq!(id.user.as_deref(), Some("u1"));
    assert_eq!(id.name, "Alice");
    assert!(id.may_join(&room("general"), JoinRule::Anyone));
    assert!(id.may_join(&room("team-red"), JoinRule::Granted));
    assert!(!id.may_join(&room("generalx"), JoinRule::Anyone));
    assert!(!id.may_join(&room("random"), JoinRule::Anyone));
    let no_name = v
        .verify(&token(json!({"sub": "bob", "exp": now() + 60})))
        .unwrap();
    assert_eq!(
        no_name.name, "bob",
        "sub is the name when there is no name claim"
    );
    assert!(no_name.may_join(&room("anything"), JoinRule::Anyone));
    assert!(
        !no_name.may_join(&room("anything"), JoinRule::Granted),
        "a granted namespace needs the claim"
    );
}

#[test]
fn the_publish_claim_and_the_namespace_rule_decide_who_sends() {
    let v = TokenVerifier::hs256(SECRET);
    let writer = v
        .verify(&token(
            json!({"sub": "w", "exp": now() + 60, "publish": ["news:*"]}),
        ))
        .unwrap();
    let reader = v
        .verify(&token(json!({"sub": "r", "exp": now() + 60})))
        .unwrap();
    let news = room("news:today");
    assert!(writer.check_publish(&news, PublishRule::Granted).is_ok());
    assert!(writer.check_publish(&news, PublishRule::Members).is_ok());
    let off_claim = writer.check_publish(&room("chat"), PublishRule::Members);
    assert_eq!(
        off_claim.unwrap_err().code,
        ErrorCode::Forbidden,
        "the claim bounds every send"
    );
    assert!(reader.check_publish(&news, PublishRule::Members).is_ok());
    assert_eq!(
        reader
            .check_publish(&news, PublishRule::Granted)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    let server_only = writer
        .check_publish(&news, PublishRule::Server)
        .unwrap_err();
    assert!(
        server_only.message.contains("only the server"),
        "{}",
        server_only.message
    );
    let wrong_type = v.verify(&token(
        json!({"sub": "x", "exp": now() + 60, "publish": "news"}),
    ));
    assert!(matches!(wrong_type, Err(AuthError::Claims(_))));
}

#[test]
fn bad_tokens_are_refused_for_the_right_reason() {
    let v = TokenVerifier::hs256(SECRET);
    assert_eq!(v.verify("not-a-jwt"), Err(AuthError::Malformed));
    assert_eq!(
        v.verify(&token(json!({"sub": "u", "exp": now() - 3600}))),
        Err(AuthError::Expired)
    );
    let other = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "exp": now() + 60}),
        &EncodingKey::from_secret(b"another"),
    )
    .unwrap();
    assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &json!({"sub": "u", "exp": now() + 60}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert_eq!(v.verify(&hs512), Err(AuthError::Algorithm));
    assert!(
        matches!(
            v.verify(&token(json!({"sub": "u"}))),
            Err(AuthError::Claims(_))
        ),
        "exp is required"
    );
    assert!(matches!(
        v.verify(&token(json!({"sub": "u", "exp": now() + 60, "name": ""}))),
        Err(AuthError::Claims(_))
    ));
    // `alg: none`, unsigned.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "u", "exp": now() + 60}).to_string())
    );
    assert!(v.verify(&none).is_err());
    for e in [
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::Expired,
    ] {
        assert!(!e.to_string().contains("test-secret"));
    }
}

#[test]
fn not_before_audience_and_issuer() {
    let v = TokenVerifier::hs256(SECRET);
    assert_eq!(
        v.verify(&token(
            json!({"sub": "u", "exp": now() + 86_400, "nbf": now() + 3600})
        )),
        Err(AuthError::NotYetValid),
        "a token valid from later is refused now"
    );
    assert!(
        v.verify(&token(
            json!({"sub": "u", "exp": now() + 60, "nbf": now() - 10})
        ))
        .is_ok()
    );
    // Without JWT_AUDIENCE an `aud` claim is tolerated.
    let with_aud = token(json!({"sub": "u", "exp": now() + 60, "aud": "chat"}));
    assert!(v.verify(&with_aud).is_ok());
    let aud_list = token(json!({"sub": "u", "exp": now() + 60, "aud": ["x", "chat"]}));
    assert!(v.verify(&aud_list).is_ok());
    let v = TokenVerifier::hs256(SECRET)
        .with_audience("chat")
        .with_issuer("https://id.example");
    let good = token(
        json!({"sub": "u", "exp": now() + 60, "aud": ["x", "chat"], "iss": "https://id.example"}),
    );
    assert!(v.verify(&good).is_ok());
    assert_eq!(
        v.verify(&token(
            json!({"sub": "u", "exp": now() + 60, "aud": "other", "iss": "https://id.example"})
        )),
        Err(AuthError::Audience)
    );
    assert!(
        matches!(
            v.verify(&token(
                json!({"sub": "u", "exp": now() + 60, "iss": "https://id.example"})
            )),
            Err(AuthError::Claims(_))
        ),
        "aud is required once an audience is configured"
    );
    assert_eq!(
        v.verify(&token(
            json!({"sub": "u", "exp": now() + 60, "aud": "chat", "iss": "https://evil.example"})
        )),
        Err(AuthError::Issuer)
    );
}

#[test]
fn modes_decide_what_happens_without_a_token() {
    let mut auth = AuthConfig::default();
    assert_eq!(auth.identify(None, || "zoe".into()).unwrap().name, "zoe");
    auth.mode = AuthMode::Required;
    assert_eq!(
        auth.identify(None, || "zoe".into()),
        Err(AuthError::Missing)
    );
    auth.tokens = Some(Arc::new(TokenVerifier::hs256(SECRET)));
    let t = token(json!({"sub": "u", "name": "Una", "exp": now() + 60}));
    assert_eq!(
        auth.identify(Some(&t), || "zoe".into()).unwrap().name,
        "Una"
    );
    auth.mode = AuthMode::Off;
    assert_eq!(
        auth.identify(Some("junk"), || "zoe".into()),
        Err(AuthError::Malformed),
        "a token given is checked"
    );
}

#[test]
fn api_key_and_bearer() {
    let auth = AuthConfig {
        api_key: Some("k3y".into()),
        ..AuthConfig::default()
    };
    assert!(auth.api_key_matches("k3y"));
    assert!(!auth.api_key_matches("k3"));
    assert!(!AuthConfig::default().api_key_matches(""));
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
    assert_eq!(bearer(&h), Some("abc"));
    assert_eq!(request_token(Some("q"), &h), Some("q"));
    h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
    assert_eq!(bearer(&h), None);
}
