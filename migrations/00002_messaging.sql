-- +goose Up
-- The provider's error code of a failed or undelivered message (Twilio's
-- ErrorCode, e.g. 30003; WhatsApp's errors[].code). Kept once the message
-- reaches a final status, so an agent can see why it never arrived.
ALTER TABLE messages ADD COLUMN error_code text;

-- +goose Down
ALTER TABLE messages DROP COLUMN error_code;
