package whatsapp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/c360dev/c360"
)

// Meta writes a Mexican mobile's wa_id with the 1 Mexico no longer dials,
// and an old Brazilian mobile's without its ninth digit. The message is
// stored on the customer of the number itself, the one the same person's
// SMS reaches; the wa_id is kept in the event's properties.
func TestInboundWhatsAppIDForms(t *testing.T) {
	for _, tc := range []struct{ name, waID, phone string }{
		{"Mexico", "5215512345678", "+525512345678"},
		{"Brazil", "552187654321", "+5521987654321"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			// The person's SMS, as the Twilio connector records it.
			sms, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMsms" + tc.waID,
				Identities: []c360.Identity{{Type: "phone", Value: tc.phone}},
				Message:    &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "por sms", ProviderID: "SMsms" + tc.waID, Status: "received"}}})
			if err != nil {
				t.Fatal(err)
			}
			wamid := "wamid." + tc.waID
			e.deliver(t, notification(inboundValue(tc.waID, "Ana",
				`{"from":"`+tc.waID+`","id":"`+wamid+`","timestamp":"1700000000","type":"text","text":{"body":"por whatsapp"}}`)))
			m := e.message(t, wamid)
			if m.Body != "por whatsapp" || m.CustomerID != sms[0].CustomerID {
				t.Errorf("message = %+v, want it on the SMS sender's customer %d", m, sms[0].CustomerID)
			}
			if c := e.customer(t, tc.phone); c.ID != sms[0].CustomerID || c.Traits["name"] != "Ana" {
				t.Errorf("customer of %s = %d %v, want %d named Ana", tc.phone, c.ID, c.Traits, sms[0].CustomerID)
			}
			for table, want := range map[string]int{"customers": 1, "messages": 2, "dead_letters": 0} {
				if n := count(t, e.db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws); n != want {
					t.Errorf("%s = %d, want %d", table, n, want)
				}
			}
			if p := e.properties(t, wamid); !strings.Contains(p, `"waId": "`+tc.waID+`"`) {
				t.Errorf("properties = %s, want the wa_id kept", p)
			}
		})
	}
}
