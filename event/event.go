// Package event names the log contract shared by the writer (proxy) and the
// reader (report): event kinds and field keys of the JSON lines authgate
// writes. Changing a value here is a breaking change of the log schema
// described in the README; add names, never rename them.
package event

// Event kinds: the value of the FieldEvent key.
const (
	Auth          = "auth"
	WSClose       = "ws_close"
	Config        = "config"
	UpstreamError = "upstream_error"
	Start         = "start"
	Stop          = "stop"
	HTTPError     = "http_error"     // net/http's own messages (TLS handshake errors, ...)
	UpstreamStart = "upstream_start" // same-service mode: the child started (and, as warn, is not accepting yet)
	UpstreamReady = "upstream_ready" // same-service mode: the child accepts connections
	UpstreamStop  = "upstream_stop"  // same-service mode: authgate stops the child (SIGTERM, SIGKILL)
	UpstreamExit  = "upstream_exit"  // same-service mode: the child ended (code or signal, uptime)
	Heartbeat     = "heartbeat"      // every log.heartbeat per instance (issue 21)
)

// Field keys. zerolog writes TimeFieldName, LevelFieldName and
// MessageFieldName itself; they are repeated here for readers.
const (
	FieldTime      = "time"
	FieldLevel     = "level"
	FieldMessage   = "message"
	FieldEvent     = "event"
	FieldInstance  = "instance" // RENDER_INSTANCE_ID, else the host name; absent in older logs
	FieldRoute     = "route"
	FieldTransport = "transport" // "websocket" | "http"
	FieldClass     = "class"
	FieldAction    = "action"
	FieldWould     = "would" // dry run: the action that would have applied
	FieldStage     = "stage" // index into the class's stage list: the stage in force
	FieldReason    = "reason"
	FieldUser      = "user" // per log.user_ids: plain, hashed, or absent
	FieldSource    = "token_source"
	FieldVerified  = "verified"
	FieldClientIP  = "client_ip"
	FieldOrigin    = "origin"
	FieldUserAgent = "user_agent"
	FieldPath      = "path" // never with a query string
	FieldRequestID = "request_id"
	FieldCloseCode = "close_code"
	FieldStatus    = "status"

	FieldDurationMS = "duration_ms"
	FieldBytesIn    = "bytes_in"
	FieldBytesOut   = "bytes_out"
	FieldClosedBy   = "closed_by" // "client" | "upstream" | "authgate"

	FieldResult = "result" // config: "loaded" | "reloaded" | "unchanged" | "rejected"
	FieldError  = "error"

	// FieldRepeat is set on a summary line of the log budget: it stands
	// for N lines of the same decision (or ws_close) held back in its
	// minute; a reader counts it as N.
	FieldRepeat = "repeat"

	// Heartbeat fields.
	FieldSince             = "since"            // RFC 3339: the previous heartbeat, or the start
	FieldIntervalSeconds   = "interval_seconds" // log.heartbeat in force
	FieldDecisionsTotal    = "decisions_total"  // decisions in [since, time)
	FieldDecisions         = "decisions"        // [{route, class, action, count}]
	FieldCount             = "count"
	FieldLegacyUsers       = "legacy_users"              // distinct users of class uuid, as log.user_ids writes them; at most 1,000
	FieldLegacyUsersTotal  = "legacy_users_total"        // how many distinct legacy users (the list may be shorter)
	FieldLegacyUsersCapped = "legacy_users_total_capped" // true: legacy_users_total is a lower bound
	FieldLinesWritten      = "lines_written"             // lines written since the last heartbeat
	FieldLinesHeld         = "lines_held"                // lines the budget held back (written as summaries)
	FieldWebSocketsOpen    = "websockets_open"
)

// Transports.
const (
	TransportWebSocket = "websocket"
	TransportHTTP      = "http"
)

// Token classes, as logged in FieldClass.
const (
	ClassJWT        = "jwt"
	ClassJWTExpired = "jwt_expired"
	ClassJWTInvalid = "jwt_invalid"
	ClassUUID       = "uuid"
	ClassMalformed  = "malformed"
	ClassMissing    = "missing"
)

// Actions, as logged in FieldAction and FieldWould.
const (
	ActionPass    = "pass"
	ActionRewrite = "rewrite"
	ActionReject  = "reject"
)
