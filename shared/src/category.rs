//! The portal domain each notification type belongs to (shopping, blog, prism, system): what
//! the inbox counts unread notifications by (`GET /unread/count?by=category`).

use serde::Serialize;

use crate::notification::NotificationType;

/// A portal domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Shopping,
    Blog,
    Prism,
    System,
}

impl Category {
    /// Every category, in the order the API lists them.
    pub const ALL: [Category; 4] = [
        Category::Shopping,
        Category::Blog,
        Category::Prism,
        Category::System,
    ];

    /// The wire name (`shopping`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Shopping => "shopping",
            Category::Blog => "blog",
            Category::Prism => "prism",
            Category::System => "system",
        }
    }

    /// The domain of a notification type.
    pub const fn of(kind: NotificationType) -> Category {
        use NotificationType::*;
        match kind {
            ORDER_CREATED | ORDER_CONFIRMED | ORDER_CANCELLED | DELIVERY_STARTED
            | DELIVERY_IN_TRANSIT | DELIVERY_COMPLETED | PAYMENT_COMPLETED | PAYMENT_FAILED
            | REFUND_COMPLETED | COUPON_ISSUED | COUPON_EXPIRING | TIMEDEAL_STARTING
            | TIMEDEAL_STARTED => Category::Shopping,
            BLOG_LIKE | BLOG_COMMENT | BLOG_REPLY | BLOG_FOLLOW | BLOG_NEW_POST => Category::Blog,
            PRISM_TASK_COMPLETED | PRISM_TASK_FAILED => Category::Prism,
            SYSTEM => Category::System,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_the_domain_its_name_says() {
        for kind in NotificationType::ALL {
            let expected = match kind.as_str().split('_').next().unwrap() {
                "BLOG" => Category::Blog,
                "PRISM" => Category::Prism,
                "SYSTEM" => Category::System,
                _ => Category::Shopping,
            };
            assert_eq!(Category::of(*kind), expected, "{kind}");
        }
        assert_eq!(
            serde_json::to_string(&Category::ALL).unwrap(),
            r#"["shopping","blog","prism","system"]"#
        );
    }
}
