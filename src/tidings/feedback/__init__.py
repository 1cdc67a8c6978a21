"""Provider feedback: bounces, complaints and deliveries from DSNs, ARF reports and webhooks."""
