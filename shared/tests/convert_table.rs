//! Table-driven tests of the converter (SPEC 2.1): one row per template, the original
//! service's acceptance cases (adapted where SPEC marks a fix), and the edge cases.

use shared::convert::{InvalidEvent, convert};
use shared::event::EventKind::{self, *};
use shared::notification::NotificationType::{self, *};

enum Expect {
    /// (recipient, type, title, message, link, referenceId, referenceType)
    Notification(
        &'static str,
        NotificationType,
        &'static str,
        String,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    ),
    /// Valid, but no per-user notification.
    Nothing,
    /// Dead-letter: the error kind and a fragment of its message.
    Invalid(&'static str, &'static str),
}

use Expect::*;

fn n(
    user: &'static str,
    kind: NotificationType,
    title: &'static str,
    message: impl Into<String>,
    link: Option<&'static str>,
    reference: Option<(&'static str, &'static str)>,
) -> Expect {
    Notification(
        user,
        kind,
        title,
        message.into(),
        link,
        reference.map(|r| r.0),
        reference.map(|r| r.1),
    )
}

fn check(case: &str, kind: EventKind, input: &str, expect: Expect) {
    let got = convert(kind, input.as_bytes());
    match (expect, got) {
        (Notification(user, ty, title, message, link, ref_id, ref_type), Ok(Some(n))) => {
            assert_eq!(n.user_id, user, "{case}: recipient");
            assert_eq!(n.kind, ty, "{case}: type");
            assert_eq!(n.title, title, "{case}: title");
            assert_eq!(n.message, message, "{case}: message");
            assert_eq!(n.link.as_deref(), link, "{case}: link");
            assert_eq!(n.reference_id.as_deref(), ref_id, "{case}: referenceId");
            assert_eq!(
                n.reference_type.as_deref(),
                ref_type,
                "{case}: referenceType"
            );
        }
        (Nothing, Ok(None)) => {}
        (Invalid(kind, fragment), Err(err)) => {
            assert_eq!(err.kind(), kind, "{case}: error kind of {err}");
            assert!(
                err.to_string().contains(fragment),
                "{case}: {err} lacks {fragment:?}"
            );
        }
        (_, got) => panic!("{case}: unexpected result {got:?}"),
    }
}

const ORDER: Option<&str> = Some("/shopping/orders/ORD-001");

#[test]
fn every_template_of_spec_2_1() {
    let task_failed = format!(
        r#"{{"taskId":55,"boardId":20,"userId":"u","title":"번역","status":"FAILED","errorMessage":"{}","timestamp":"2026-02-06T01:00:00.000Z"}}"#,
        "E".repeat(40)
    );
    let cases: Vec<(&str, EventKind, &str, Expect)> = vec![
        (
            "signup",
            UserSignedUp,
            r#"{"userId":"u-1","email":"a@b.c","name":"라제"}"#,
            n(
                "u-1",
                SYSTEM,
                "환영합니다!",
                "라제님, Portal Universe에 가입해주셔서 감사합니다.",
                None,
                None,
            ),
        ),
        (
            "order created (reference case)",
            OrderCreated,
            r#"{"orderNumber":"ORD-20250701-001","userId":"user-123","totalAmount":59000,"itemCount":3}"#,
            n(
                "user-123",
                ORDER_CREATED,
                "주문이 접수되었습니다",
                "3개 상품, 59,000원 결제 대기중",
                Some("/shopping/orders/ORD-20250701-001"),
                Some(("ORD-20250701-001", "order")),
            ),
        ),
        (
            "order cancelled (reference case)",
            OrderCancelled,
            r#"{"orderNumber":"ORD-001","userId":"u","totalAmount":30000,"cancelReason":"고객 요청"}"#,
            n(
                "u",
                ORDER_CANCELLED,
                "주문이 취소되었습니다",
                "주문번호: ORD-001 - 고객 요청",
                ORDER,
                Some(("ORD-001", "order")),
            ),
        ),
        (
            "payment completed (reference case)",
            PaymentCompleted,
            r#"{"paymentNumber":"PAY-001","orderNumber":"ORD-001","userId":"u","amount":150000,"paymentMethod":"CARD"}"#,
            n(
                "u",
                PAYMENT_COMPLETED,
                "결제가 완료되었습니다",
                "150,000원 결제 완료",
                ORDER,
                Some(("PAY-001", "payment")),
            ),
        ),
        (
            "payment failed, short reason kept",
            PaymentFailed,
            r#"{"paymentNumber":"PAY-002","orderNumber":"ORD-002","userId":"u","failureReason":"카드 잔액 부족"}"#,
            n(
                "u",
                PAYMENT_FAILED,
                "결제가 실패했습니다",
                "사유: 카드 잔액 부족",
                Some("/shopping/orders/ORD-002"),
                Some(("PAY-002", "payment")),
            ),
        ),
        (
            "delivery shipped (reference case)",
            DeliveryShipped,
            r#"{"trackingNumber":"TRACK-001","orderNumber":"ORD-001","userId":"u","carrier":"CJ대한통운","estimatedDeliveryDate":[2026,2,9]}"#,
            n(
                "u",
                DELIVERY_STARTED,
                "배송이 시작되었습니다",
                "운송장번호: TRACK-001 (CJ대한통운)",
                ORDER,
                Some(("TRACK-001", "delivery")),
            ),
        ),
        (
            "coupon percentage, userId as number",
            CouponIssued,
            r#"{"userId":100,"couponCode":"COUPON-001","couponName":"여름 세일 쿠폰","discountType":"PERCENTAGE","discountValue":15}"#,
            n(
                "100",
                COUPON_ISSUED,
                "쿠폰이 발급되었습니다",
                "여름 세일 쿠폰 - 15%할인",
                Some("/shopping/coupons"),
                Some(("COUPON-001", "coupon")),
            ),
        ),
        (
            "timedeal makes no notification",
            TimeDealStarted,
            r#"{"timeDealId":7,"timeDealName":"x"}"#,
            Nothing,
        ),
        (
            "post liked (reference case)",
            PostLiked,
            r#"{"likeId":"like-001","postId":"post-123","postTitle":"러스트 입문","authorId":"author-1","likerId":"l","likerName":"민수"}"#,
            n(
                "author-1",
                BLOG_LIKE,
                "게시글에 좋아요가 달렸습니다",
                "\"러스트 입문\"에 민수님이 좋아요를 눌렀습니다",
                Some("/blog/post-123"),
                Some(("like-001", "like")),
            ),
        ),
        (
            "post commented, long content cut at 30",
            PostCommented,
            r#"{"commentId":"comment-001","postId":"p","postTitle":"제목","authorId":"author-1","commenterId":"c","commenterName":"지수","content":"0123456789012345678901234567890123456789"}"#,
            n(
                "author-1",
                BLOG_COMMENT,
                "게시글에 새 댓글이 달렸습니다",
                "\"제목\"에 지수님이 댓글을 달았습니다: 012345678901234567890123456789...",
                Some("/blog/p"),
                Some(("comment-001", "comment")),
            ),
        ),
        (
            "comment replied (reference case)",
            CommentReplied,
            r#"{"replyId":"reply-001","postId":"post-456","parentCommentId":"parent-comment-id","parentCommentAuthorId":"parent-author-id","replierId":"r","replierName":"영희","content":"감사합니다"}"#,
            n(
                "parent-author-id",
                BLOG_REPLY,
                "댓글에 답글이 달렸습니다",
                "영희님이 회원님의 댓글에 답글을 달았습니다: 감사합니다",
                Some("/blog/post-456#comment-parent-comment-id"),
                Some(("reply-001", "reply")),
            ),
        ),
        (
            "user followed (reference case)",
            UserFollowed,
            r#"{"followId":"follow-001","followeeId":"followee-user-id","followerId":"f","followerName":"철수"}"#,
            n(
                "followee-user-id",
                BLOG_FOLLOW,
                "새 팔로워가 생겼습니다",
                "철수님이 회원님을 팔로우하기 시작했습니다",
                Some("/blog/users/followee-user-id/followers"),
                Some(("follow-001", "follow")),
            ),
        ),
        (
            "task completed (reference case, NestJS shape)",
            TaskCompleted,
            r#"{"taskId":42,"boardId":10,"userId":"u","title":"보고서 요약","status":"IN_REVIEW","agentName":"Claude","executionId":3,"timestamp":"2026-02-06T01:00:00.000Z"}"#,
            n(
                "u",
                PRISM_TASK_COMPLETED,
                "AI 태스크가 완료되었습니다",
                "\"보고서 요약\" 태스크가 Claude 에이전트에 의해 완료되었습니다",
                Some("/prism/boards/10/tasks/42"),
                Some(("42", "task")),
            ),
        ),
        (
            "task failed (reference case), error cut at 30",
            TaskFailed,
            &task_failed,
            n(
                "u",
                PRISM_TASK_FAILED,
                "AI 태스크가 실패했습니다",
                format!("\"번역\" 태스크 실행 실패: {}...", "E".repeat(30)),
                Some("/prism/boards/20/tasks/55"),
                Some(("55", "task")),
            ),
        ),
    ];
    for (case, kind, input, expect) in cases {
        check(case, kind, input, expect);
    }
}

#[test]
fn amounts_are_formatted_exactly() {
    let cases = [
        ("59000.00", "59,000"),
        ("1234.5", "1,234.5"),
        ("0.0015", "0.002"),
        ("1e3", "1,000"),
        ("\"45000\"", "45,000"),
        ("null", "0"),
    ];
    for (amount, shown) in cases {
        let input = format!(
            r#"{{"orderNumber":"ORD-001","userId":"u","itemCount":2,"totalAmount":{amount}}}"#
        );
        let expect = n(
            "u",
            ORDER_CREATED,
            "주문이 접수되었습니다",
            format!("2개 상품, {shown}원 결제 대기중"),
            ORDER,
            Some(("ORD-001", "order")),
        );
        check(
            &format!("totalAmount {amount}"),
            OrderCreated,
            &input,
            expect,
        );
        let input = format!(
            r#"{{"paymentNumber":"P","orderNumber":"ORD-001","userId":"u","amount":{amount}}}"#
        );
        let expect = n(
            "u",
            PAYMENT_COMPLETED,
            "결제가 완료되었습니다",
            format!("{shown}원 결제 완료"),
            ORDER,
            Some(("P", "payment")),
        );
        check(
            &format!("amount {amount}"),
            PaymentCompleted,
            &input,
            expect,
        );
    }
    check(
        "missing amount and itemCount",
        OrderCreated,
        r#"{"orderNumber":"ORD-001","userId":"u"}"#,
        n(
            "u",
            ORDER_CREATED,
            "주문이 접수되었습니다",
            "0개 상품, 0원 결제 대기중",
            ORDER,
            Some(("ORD-001", "order")),
        ),
    );
    check(
        "amount that is not a number",
        OrderCreated,
        r#"{"orderNumber":"ORD-001","userId":"u","totalAmount":"lots"}"#,
        Invalid("InvalidEvent.InvalidNumber", "totalAmount"),
    );
}

#[test]
fn spring_json_with_type_header_fields_and_date_arrays_is_accepted() {
    let input = r#"{"orderNumber":"ORD-20260206-ab12cd34","userId":"550e8400-e29b-41d4-a716-446655440000","totalAmount":59000.00,"itemCount":3,"items":[{"productId":1,"productName":"키보드","quantity":1,"price":19000.00}],"createdAt":[2026,2,6,10,0,0,123456789],"__TypeId__":"ignored"}"#;
    check(
        "spring order",
        OrderCreated,
        input,
        n(
            "550e8400-e29b-41d4-a716-446655440000",
            ORDER_CREATED,
            "주문이 접수되었습니다",
            "3개 상품, 59,000원 결제 대기중",
            Some("/shopping/orders/ORD-20260206-ab12cd34"),
            Some(("ORD-20260206-ab12cd34", "order")),
        ),
    );
}

#[test]
fn discount_is_percent_only_for_exact_percentage() {
    let coupon = |ty: &str, value: &str| {
        format!(
            r#"{{"userId":"999","couponCode":"C","couponName":"신규 가입 쿠폰","discountType":{ty},"discountValue":{value}}}"#
        )
    };
    let cases = [
        ("\"PERCENTAGE\"", "15", "신규 가입 쿠폰 - 15%할인"),
        ("\"FIXED\"", "5000", "신규 가입 쿠폰 - 5,000원할인"),
        ("\"percentage\"", "15", "신규 가입 쿠폰 - 15원할인"),
        ("null", "5000", "신규 가입 쿠폰 - 5,000원할인"),
        ("\"FIXED\"", "null", "신규 가입 쿠폰 - 0원할인"),
    ];
    for (ty, value, message) in cases {
        check(
            &format!("coupon {ty} {value}"),
            CouponIssued,
            &coupon(ty, value),
            n(
                "999",
                COUPON_ISSUED,
                "쿠폰이 발급되었습니다",
                message,
                Some("/shopping/coupons"),
                Some(("C", "coupon")),
            ),
        );
    }
}

/// `cut` at n-1, n and n+1 characters, for every truncated field, in ASCII, Korean and emoji.
#[test]
fn cut_boundaries_for_every_truncated_field() {
    for unit in ["A", "가", "😀"] {
        for (limit, delta) in [
            (50usize, -1i64),
            (50, 0),
            (50, 1),
            (30, -1),
            (30, 0),
            (30, 1),
        ] {
            let len = (limit as i64 + delta) as usize;
            let text = unit.repeat(len);
            let expected = if len > limit {
                format!("{}...", unit.repeat(limit))
            } else {
                text.clone()
            };
            if limit == 50 {
                let input = format!(
                    r#"{{"paymentNumber":"P","orderNumber":"ORD-001","userId":"u","failureReason":"{text}"}}"#
                );
                let expect = n(
                    "u",
                    PAYMENT_FAILED,
                    "결제가 실패했습니다",
                    format!("사유: {expected}"),
                    ORDER,
                    Some(("P", "payment")),
                );
                check(
                    &format!("failureReason {unit}×{len}"),
                    PaymentFailed,
                    &input,
                    expect,
                );
            } else {
                let input = format!(
                    r#"{{"likeId":"l","postId":"p","postTitle":"{text}","authorId":"a","likerName":"B"}}"#
                );
                let expect = n(
                    "a",
                    BLOG_LIKE,
                    "게시글에 좋아요가 달렸습니다",
                    format!("\"{expected}\"에 B님이 좋아요를 눌렀습니다"),
                    Some("/blog/p"),
                    Some(("l", "like")),
                );
                check(
                    &format!("postTitle {unit}×{len}"),
                    PostLiked,
                    &input,
                    expect,
                );
            }
        }
    }
    // The other limits: comment title 20, reply content 40, task titles 30 / 25.
    let title21 = "가".repeat(21);
    let input = format!(
        r#"{{"commentId":"c","postId":"p","postTitle":"{title21}","authorId":"a","commenterName":"B","content":"hi"}}"#
    );
    let expect = n(
        "a",
        BLOG_COMMENT,
        "게시글에 새 댓글이 달렸습니다",
        format!("\"{}...\"에 B님이 댓글을 달았습니다: hi", "가".repeat(20)),
        Some("/blog/p"),
        Some(("c", "comment")),
    );
    check("comment title 21", PostCommented, &input, expect);
    let content41 = "😀".repeat(41);
    let input = format!(
        r#"{{"replyId":"r","postId":"p","parentCommentId":"c","parentCommentAuthorId":"a","replierName":"B","content":"{content41}"}}"#
    );
    let expect = n(
        "a",
        BLOG_REPLY,
        "댓글에 답글이 달렸습니다",
        format!(
            "B님이 회원님의 댓글에 답글을 달았습니다: {}...",
            "😀".repeat(40)
        ),
        Some("/blog/p#comment-c"),
        Some(("r", "reply")),
    );
    check("reply content 41", CommentReplied, &input, expect);
    let input = format!(
        r#"{{"taskId":1,"boardId":2,"userId":"u","title":"{}","agentName":"X"}}"#,
        "가".repeat(31)
    );
    let expect = n(
        "u",
        PRISM_TASK_COMPLETED,
        "AI 태스크가 완료되었습니다",
        format!(
            "\"{}...\" 태스크가 X 에이전트에 의해 완료되었습니다",
            "가".repeat(30)
        ),
        Some("/prism/boards/2/tasks/1"),
        Some(("1", "task")),
    );
    check("completed title 31", TaskCompleted, &input, expect);
    let input = format!(
        r#"{{"taskId":1,"boardId":2,"userId":"u","title":"{}","errorMessage":"x"}}"#,
        "가".repeat(25)
    );
    let expect = n(
        "u",
        PRISM_TASK_FAILED,
        "AI 태스크가 실패했습니다",
        format!("\"{}\" 태스크 실행 실패: x", "가".repeat(25)),
        Some("/prism/boards/2/tasks/1"),
        Some(("1", "task")),
    );
    check("failed title 25", TaskFailed, &input, expect);
}

#[test]
fn missing_display_text_is_empty_never_null() {
    check(
        "null postTitle",
        PostLiked,
        r#"{"likeId":"l","postId":"p","postTitle":null,"authorId":"a","likerName":"B"}"#,
        n(
            "a",
            BLOG_LIKE,
            "게시글에 좋아요가 달렸습니다",
            "\"\"에 B님이 좋아요를 눌렀습니다",
            Some("/blog/p"),
            Some(("l", "like")),
        ),
    );
    check(
        "missing cancelReason has no dangling dash",
        OrderCancelled,
        r#"{"orderNumber":"ORD-001","userId":"u"}"#,
        n(
            "u",
            ORDER_CANCELLED,
            "주문이 취소되었습니다",
            "주문번호: ORD-001",
            ORDER,
            Some(("ORD-001", "order")),
        ),
    );
    check(
        "blank cancelReason has no dangling dash",
        OrderCancelled,
        r#"{"orderNumber":"ORD-001","userId":"u","cancelReason":" "}"#,
        n(
            "u",
            ORDER_CANCELLED,
            "주문이 취소되었습니다",
            "주문번호: ORD-001",
            ORDER,
            Some(("ORD-001", "order")),
        ),
    );
    check(
        "missing agentName is AI",
        TaskCompleted,
        r#"{"taskId":7,"boardId":3,"userId":"u","title":"요약"}"#,
        n(
            "u",
            PRISM_TASK_COMPLETED,
            "AI 태스크가 완료되었습니다",
            "\"요약\" 태스크가 AI 에이전트에 의해 완료되었습니다",
            Some("/prism/boards/3/tasks/7"),
            Some(("7", "task")),
        ),
    );
    check(
        "missing name, carrier, reason, names",
        UserSignedUp,
        r#"{"userId":"u"}"#,
        n(
            "u",
            SYSTEM,
            "환영합니다!",
            "님, Portal Universe에 가입해주셔서 감사합니다.",
            None,
            None,
        ),
    );
    check(
        "missing carrier",
        DeliveryShipped,
        r#"{"trackingNumber":"T","orderNumber":"ORD-001","userId":"u"}"#,
        n(
            "u",
            DELIVERY_STARTED,
            "배송이 시작되었습니다",
            "운송장번호: T ()",
            ORDER,
            Some(("T", "delivery")),
        ),
    );
    check(
        "missing failure reason and error message",
        TaskFailed,
        r#"{"taskId":1,"boardId":2,"userId":"u"}"#,
        n(
            "u",
            PRISM_TASK_FAILED,
            "AI 태스크가 실패했습니다",
            "\"\" 태스크 실행 실패: ",
            Some("/prism/boards/2/tasks/1"),
            Some(("1", "task")),
        ),
    );
}

#[test]
fn missing_recipient_or_reference_is_a_dead_letter() {
    let missing = "InvalidEvent.MissingField";
    let cases: [(EventKind, &str, &str); 18] = [
        (UserSignedUp, r#"{"name":"x"}"#, "userId"),
        (UserSignedUp, r#"{"userId":"   ","name":"x"}"#, "userId"),
        (UserSignedUp, r#"{"userId":null}"#, "userId"),
        (OrderCreated, r#"{"orderNumber":"O"}"#, "userId"),
        (OrderCreated, r#"{"userId":"u"}"#, "orderNumber"),
        (
            OrderCancelled,
            r#"{"userId":"u","orderNumber":""}"#,
            "orderNumber",
        ),
        (
            PaymentCompleted,
            r#"{"userId":"u","orderNumber":"O"}"#,
            "paymentNumber",
        ),
        (
            PaymentFailed,
            r#"{"userId":"u","paymentNumber":"P"}"#,
            "orderNumber",
        ),
        (
            DeliveryShipped,
            r#"{"userId":"u","orderNumber":"O"}"#,
            "trackingNumber",
        ),
        (CouponIssued, r#"{"couponCode":"C"}"#, "userId"),
        (CouponIssued, r#"{"userId":1}"#, "couponCode"),
        (PostLiked, r#"{"postId":"p","likeId":"l"}"#, "authorId"),
        (
            PostCommented,
            r#"{"authorId":"a","postId":"p"}"#,
            "commentId",
        ),
        (
            CommentReplied,
            r#"{"parentCommentAuthorId":"a","postId":"p","replyId":"r"}"#,
            "parentCommentId",
        ),
        (UserFollowed, r#"{"followId":"f"}"#, "followeeId"),
        (TaskCompleted, r#"{"userId":"u","boardId":1}"#, "taskId"),
        (TaskFailed, r#"{"userId":"u","taskId":1}"#, "boardId"),
        (TaskFailed, r#"{"taskId":1,"boardId":1}"#, "userId"),
    ];
    for (kind, input, field) in cases {
        check(
            &format!("{kind} without {field}"),
            kind,
            input,
            Invalid(missing, field),
        );
    }
}

#[test]
fn malformed_values_are_dead_letters() {
    let malformed = "InvalidEvent.MalformedJson";
    for (kind, input) in [
        (OrderCreated, "not json"),
        (OrderCreated, ""),
        (OrderCreated, "null"),
        (OrderCreated, r#"["u","O"]"#),
        (OrderCreated, r#"{"userId":"u","orderNumber":"O""#),
        (OrderCreated, r#"{"userId":{"id":1},"orderNumber":"O"}"#),
        (
            OrderCreated,
            r#"{"userId":"u","orderNumber":"O","itemCount":"three"}"#,
        ),
        (TaskCompleted, r#"{"userId":"u","taskId":1.5,"boardId":1}"#),
        (TimeDealStarted, "garbage"),
        (
            PostLiked,
            "{\"authorId\":\"\\ud800\",\"postId\":\"p\",\"likeId\":\"l\"}",
        ),
    ] {
        check(
            &format!("{kind}: {input}"),
            kind,
            input,
            Invalid(malformed, ""),
        );
    }
}

#[test]
fn values_longer_than_their_column_are_dead_letters() {
    let input = format!(r#"{{"userId":"{}","orderNumber":"O"}}"#, "u".repeat(65));
    check(
        "65-char recipient",
        OrderCancelled,
        &input,
        Invalid("InvalidEvent.FieldTooLong", "recipient"),
    );
    let input = format!(r#"{{"userId":"{}","orderNumber":"O"}}"#, "가".repeat(64));
    assert!(
        convert(OrderCancelled, input.as_bytes()).is_ok(),
        "64 Korean characters fit VARCHAR(64)"
    );
    let input = format!(r#"{{"userId":"u","orderNumber":"{}"}}"#, "O".repeat(101));
    check(
        "101-char reference",
        OrderCancelled,
        &input,
        Invalid("InvalidEvent.FieldTooLong", "referenceId"),
    );
    let input = format!(
        r#"{{"userId":"u","orderNumber":"O","cancelReason":"{}"}}"#,
        "x".repeat(70_000)
    );
    check(
        "70 KB message",
        OrderCancelled,
        &input,
        Invalid("InvalidEvent.FieldTooLong", "message"),
    );
}

#[test]
fn conversion_is_deterministic_so_replays_share_a_dedup_key() {
    let input = br#"{"orderNumber":"ORD-1","userId":"u","totalAmount":1}"#;
    let a = convert(OrderCreated, input).unwrap().unwrap();
    let b = convert(OrderCreated, input).unwrap().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.dedup_key(), b.dedup_key());
    let cancelled = convert(OrderCancelled, input).unwrap().unwrap();
    assert_ne!(
        a.dedup_key(),
        cancelled.dedup_key(),
        "type is part of the key"
    );
}

#[test]
fn invalid_event_errors_say_dead_letter_kind() {
    let err: InvalidEvent = convert(UserSignedUp, b"{}").unwrap_err();
    assert_eq!(err.kind(), "InvalidEvent.MissingField");
}
