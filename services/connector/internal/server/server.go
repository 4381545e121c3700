// Package server implements ConnectorService: the catalogue, connections
// with sealed credentials, OAuth 2.0 with state and PKCE, and credential
// resolution for seghub's own services.
package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/services/connector/internal/store"
)

const (
	stateTTL      = 10 * time.Minute
	refreshBefore = 2 * time.Minute
	checkTimeout  = 15 * time.Second
	maxName       = 100
)

// Server implements ConnectorService.
type Server struct {
	connectorv1.UnimplementedConnectorServiceServer
	store *store.Store
	cfg   *config.Config
	// egress guards every outbound call (credential checks, OAuth token
	// endpoints); http is its client.
	egress *destinations.Egress
	http   *http.Client
	now    func() time.Time
}

// New returns the server; a nil egress refuses every private address.
func New(st *store.Store, cfg *config.Config, egress *destinations.Egress) *Server {
	if egress == nil {
		egress = destinations.DefaultEgress()
	}
	return &Server{store: st, cfg: cfg, egress: egress, http: egress.Client(), now: time.Now}
}

func (s *Server) oauthConfig(typ string) *oauth2.Config {
	base := strings.TrimRight(s.cfg.DestinationURL(typ), "/")
	return &oauth2.Config{
		ClientID: s.cfg.CommandBarClientID, ClientSecret: s.cfg.CommandBarClientSecret,
		// Assumed endpoint paths: CommandBar does not publish its OAuth URLs.
		Endpoint:    oauth2.Endpoint{AuthURL: base + "/oauth/authorize", TokenURL: base + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: strings.TrimRight(s.cfg.PublicURL, "/") + "/oauth/callback",
	}
}

func typePB(t destinations.Type) *connectorv1.DestinationType {
	pb := &connectorv1.DestinationType{Type: t.Name, DisplayName: t.DisplayName, AuthMethod: connectorv1.AuthMethod(t.Auth),
		SegmentsOut: t.SegmentsOut, EventsIn: t.EventsIn, EventsOut: t.EventsOut, SegmentsIn: t.SegmentsIn,
		RecurringLimit: uint32(t.RecurringLimit), BatchSize: uint32(t.BatchSize), RateLimitPerMinute: uint32(t.RatePerMinute),
		CredentialFields: t.CredentialFields, DefaultIdentityProperty: t.DefaultIdentity}
	if t.DefaultInterval > 0 {
		pb.DefaultInterval = durationpb.New(t.DefaultInterval)
	}
	if t.Retention > 0 {
		pb.Retention = durationpb.New(t.Retention)
	}
	return pb
}

// ConnectionPB converts a stored connection (never its secrets).
func ConnectionPB(c *store.Connection) *connectorv1.Connection {
	status := map[string]connectorv1.ConnectionStatus{store.StatusConnected: connectorv1.ConnectionStatus_CONNECTION_STATUS_CONNECTED, store.StatusNeedsReauth: connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH, store.StatusError: connectorv1.ConnectionStatus_CONNECTION_STATUS_ERROR}[c.Status]
	pb := &connectorv1.Connection{ConnectionId: c.ID, Type: c.Type, Name: c.Name, Status: status, LastError: c.LastError, Account: c.Account,
		Settings: &connectorv1.ConnectionSettings{SendEvents: c.SendEvents, IdentityProperty: c.IdentityProperty}, CreateTime: timestamppb.New(c.Created), UpdateTime: timestamppb.New(c.Updated)}
	if !c.LastErrorAt.IsZero() {
		pb.LastErrorTime = timestamppb.New(c.LastErrorAt)
	}
	if t, ok := destinations.Lookup(c.Type); ok && t.ReceivesWebhooks() {
		pb.WebhookPath = "/webhooks/" + c.Type + "/" + c.ID
	}
	return pb
}

// ListDestinationTypes implements ConnectorService.
func (s *Server) ListDestinationTypes(context.Context, *connectorv1.ListDestinationTypesRequest) (*connectorv1.ListDestinationTypesResponse, error) {
	resp := &connectorv1.ListDestinationTypesResponse{}
	for _, t := range destinations.All() {
		resp.Types = append(resp.Types, typePB(t))
	}
	return resp, nil
}

func lookup(typ string) (destinations.Type, error) {
	t, ok := destinations.Lookup(typ)
	if !ok {
		var names []string
		for _, t := range destinations.All() {
			names = append(names, t.Name)
		}
		return t, apperr.Invalid("type", fmt.Sprintf("unknown destination type %q; one of %s", typ, strings.Join(names, ", ")))
	}
	return t, nil
}

func checkName(name string) (string, error) { return apperr.Name("name", name, maxName) }

func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b)
}

// check makes the destination's test call with creds.
func (s *Server) check(ctx context.Context, t destinations.Type, creds map[string]string) error {
	if t.SegmentsIn {
		return nil // sources call us; there is nothing to call
	}
	// Refused early so the caller learns which field is wrong; the dial
	// guard refuses them again whatever DNS answers later.
	for _, f := range t.URLFields() {
		if err := s.egress.CheckURL(ctx, creds[f]); err != nil {
			return apperr.Invalid("credentials."+f, err.Error())
		}
	}
	a, err := destinations.New(t.Name, destinations.Config{BaseURL: s.cfg.DestinationURL(t.Name), Credentials: creds, Egress: s.egress, MaxAttempts: 3, MaxBackoff: time.Second})
	if err != nil {
		return apperr.Invalid("credentials", err.Error())
	}
	if t.Name == "webhook" {
		return nil // receivers may not answer a ping; the URL was validated
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err = a.Check(ctx)
	switch destinations.KindOf(err) {
	case destinations.AuthFailed:
		return apperr.FailedPrecondition("%s refused these credentials (%v); check them and try again — nothing was saved", t.DisplayName, err)
	case destinations.Permanent:
		return apperr.FailedPrecondition("%s rejected the test call (%v); nothing was saved", t.DisplayName, err)
	case destinations.Refused:
		return apperr.FailedPrecondition("%s cannot be called: %v; nothing was saved", t.DisplayName, err)
	}
	if err != nil {
		return apperr.Unavailable("could not reach %s to check the credentials (%v); nothing was saved, try again", t.DisplayName, err)
	}
	return nil
}

// CreateConnection implements ConnectorService.
func (s *Server) CreateConnection(ctx context.Context, req *connectorv1.CreateConnectionRequest) (*connectorv1.CreateConnectionResponse, error) {
	t, err := lookup(req.GetType())
	if err != nil {
		return nil, err
	}
	if t.Auth == destinations.AuthOAuth2 {
		return nil, apperr.FailedPrecondition("%s connects by OAuth: call StartAuthorization (POST /v1/connections:authorize) and open the returned URL", t.DisplayName)
	}
	name, err := checkName(req.GetName())
	if err != nil {
		return nil, err
	}
	creds := map[string]string{}
	for _, f := range t.CredentialFields {
		v := strings.TrimSpace(req.GetCredentials()[f])
		if v == "" {
			return nil, apperr.Invalid("credentials."+f, "is required for "+t.DisplayName)
		}
		creds[f] = v
	}
	for k := range req.GetCredentials() {
		if _, ok := creds[k]; !ok {
			return nil, apperr.Invalid("credentials."+k, fmt.Sprintf("is not a credential of %s (expected %s)", t.DisplayName, strings.Join(t.CredentialFields, ", ")))
		}
	}
	if err := s.check(ctx, t, creds); err != nil {
		return nil, err
	}
	c := &store.Connection{ID: ids.New("conn"), Env: auth.MustEnvironment(ctx), Type: t.Name, Name: name, Account: creds[t.AccountField], Status: store.StatusConnected,
		SendEvents: req.GetSettings().GetSendEvents(), IdentityProperty: identity(req.GetSettings(), t), Credentials: creds}
	if t.ReceivesWebhooks() {
		c.SigningSecret = newSecret()
	}
	if err := s.store.Create(ctx, c); err != nil {
		return nil, err
	}
	return &connectorv1.CreateConnectionResponse{Connection: ConnectionPB(c), SigningSecret: c.SigningSecret}, nil
}

func identity(set *connectorv1.ConnectionSettings, t destinations.Type) string {
	if p := strings.TrimSpace(set.GetIdentityProperty()); p != "" {
		return p
	}
	return t.DefaultIdentity
}

func checkID(id string) error {
	if strings.TrimSpace(id) == "" {
		return apperr.Invalid("connection_id", "is required")
	}
	return nil
}

// GetConnection implements ConnectorService.
func (s *Server) GetConnection(ctx context.Context, req *connectorv1.GetConnectionRequest) (*connectorv1.GetConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	c, err := s.store.Get(ctx, auth.MustEnvironment(ctx), req.GetConnectionId(), false)
	if err != nil {
		return nil, err
	}
	return &connectorv1.GetConnectionResponse{Connection: ConnectionPB(c)}, nil
}

// connectionCursor is ListConnections' page token: the last connection
// returned, in (name, id) order.
type connectionCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

// ListConnections implements ConnectorService.
func (s *Server) ListConnections(ctx context.Context, req *connectorv1.ListConnectionsRequest) (*connectorv1.ListConnectionsResponse, error) {
	var cur connectionCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	cs, err := s.store.List(ctx, auth.MustEnvironment(ctx), req.GetType(), cur.Name, cur.ID, size+1)
	if err != nil {
		return nil, err
	}
	resp := &connectorv1.ListConnectionsResponse{}
	if len(cs) > size {
		cs = cs[:size]
		last := cs[size-1]
		resp.NextPageToken = paging.Encode(connectionCursor{Name: last.Name, ID: last.ID})
	}
	for _, c := range cs {
		resp.Connections = append(resp.Connections, ConnectionPB(c))
	}
	return resp, nil
}

// UpdateConnection implements ConnectorService.
func (s *Server) UpdateConnection(ctx context.Context, req *connectorv1.UpdateConnectionRequest) (*connectorv1.UpdateConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	c, err := s.store.Get(ctx, auth.MustEnvironment(ctx), req.GetConnectionId(), true)
	if err != nil {
		return nil, err
	}
	t, _ := destinations.Lookup(c.Type)
	if req.Name != nil {
		if c.Name, err = checkName(req.GetName()); err != nil {
			return nil, err
		}
	}
	if set := req.GetSettings(); set != nil {
		c.SendEvents = set.GetSendEvents()
		c.IdentityProperty = identity(set, t)
	}
	if len(req.GetCredentials()) > 0 {
		if t.Auth == destinations.AuthOAuth2 {
			return nil, apperr.FailedPrecondition("%s credentials come from OAuth; start a new authorisation to replace them", t.DisplayName)
		}
		creds := map[string]string{}
		for _, f := range t.CredentialFields {
			creds[f] = strings.TrimSpace(req.GetCredentials()[f])
			if creds[f] == "" {
				return nil, apperr.Invalid("credentials."+f, "is required for "+t.DisplayName)
			}
		}
		if err := s.check(ctx, t, creds); err != nil {
			return nil, err
		}
		c.Credentials, c.Account, c.Status, c.LastError = creds, creds[t.AccountField], store.StatusConnected, ""
	}
	if err := s.store.Update(ctx, c); err != nil {
		return nil, err
	}
	return &connectorv1.UpdateConnectionResponse{Connection: ConnectionPB(c)}, nil
}

// DeleteConnection implements ConnectorService.
func (s *Server) DeleteConnection(ctx context.Context, req *connectorv1.DeleteConnectionRequest) (*connectorv1.DeleteConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	return &connectorv1.DeleteConnectionResponse{}, s.store.Delete(ctx, auth.MustEnvironment(ctx), req.GetConnectionId())
}

// StartAuthorization implements ConnectorService.
func (s *Server) StartAuthorization(ctx context.Context, req *connectorv1.StartAuthorizationRequest) (*connectorv1.StartAuthorizationResponse, error) {
	t, err := lookup(req.GetType())
	if err != nil {
		return nil, err
	}
	if t.Auth != destinations.AuthOAuth2 {
		return nil, apperr.FailedPrecondition("%s does not connect by OAuth; use CreateConnection with %s", t.DisplayName, strings.Join(t.CredentialFields, ", "))
	}
	name, err := checkName(req.GetName())
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.GetAccount()) == "" {
		return nil, apperr.Invalid("account", "name the "+t.DisplayName+" organisation to connect")
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	state := base64.RawURLEncoding.EncodeToString(b)
	verifier := oauth2.GenerateVerifier()
	exp := s.now().Add(stateTTL)
	if err := s.store.SaveState(ctx, state, store.OAuthState{Env: auth.MustEnvironment(ctx), Type: t.Name, Name: name, Account: strings.TrimSpace(req.GetAccount()),
		SendEvents: req.GetSettings().GetSendEvents(), IdentityProperty: identity(req.GetSettings(), t), Verifier: verifier, Expires: exp}); err != nil {
		return nil, err
	}
	u := s.oauthConfig(t.Name).AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
	return &connectorv1.StartAuthorizationResponse{AuthorizeUrl: u, ExpireTime: timestamppb.New(exp)}, nil
}

// CompleteAuthorization implements ConnectorService.
func (s *Server) CompleteAuthorization(ctx context.Context, req *connectorv1.CompleteAuthorizationRequest) (*connectorv1.CompleteAuthorizationResponse, error) {
	if req.GetState() == "" {
		return nil, apperr.Invalid("state", "is required")
	}
	st, err := s.store.UseState(ctx, req.GetState())
	if err != nil {
		return nil, err
	}
	// A caller acting for an environment may only complete its own states.
	if env := auth.MustEnvironment(ctx); env != "" && env != st.Env {
		return nil, store.ErrBadState
	}
	if req.GetError() != "" {
		return nil, apperr.FailedPrecondition("authorisation was not granted: %s", req.GetError())
	}
	if req.GetCode() == "" {
		return nil, apperr.Invalid("code", "is required")
	}
	t, _ := destinations.Lookup(st.Type)
	xctx := context.WithValue(ctx, oauth2.HTTPClient, s.http)
	tok, err := s.oauthConfig(st.Type).Exchange(xctx, req.GetCode(), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return nil, apperr.FailedPrecondition("%s refused the authorisation code: %s", t.DisplayName, oauthProblem(err))
	}
	c := &store.Connection{ID: ids.New("conn"), Env: st.Env, Type: st.Type, Name: st.Name, Account: st.Account, Status: store.StatusConnected,
		SendEvents: st.SendEvents, IdentityProperty: st.IdentityProperty, Credentials: tokenCreds(tok, st.Account)}
	if t.ReceivesWebhooks() {
		c.SigningSecret = newSecret()
	}
	if err := s.store.Create(ctx, c); err != nil {
		return nil, err
	}
	return &connectorv1.CompleteAuthorizationResponse{Connection: ConnectionPB(c), EnvironmentId: st.Env, SigningSecret: c.SigningSecret}, nil
}

func tokenCreds(tok *oauth2.Token, account string) map[string]string {
	return map[string]string{"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expiry": tok.Expiry.UTC().Format(time.RFC3339Nano), "org_id": account}
}

// ResolveConnection implements ConnectorService.
func (s *Server) ResolveConnection(ctx context.Context, req *connectorv1.ResolveConnectionRequest) (*connectorv1.ResolveConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	p, _ := auth.FromContext(ctx)
	if !p.Internal {
		// Decrypted credentials go to seghub's own components only, never to
		// an API key of any role.
		return nil, apperr.PermissionDenied("ResolveConnection is reserved for seghub's own components")
	}
	var c *store.Connection
	var err error
	if p.EnvironmentID == "" {
		c, err = s.store.GetByID(ctx, req.GetConnectionId())
	} else {
		c, err = s.store.Get(ctx, p.EnvironmentID, req.GetConnectionId(), true)
	}
	if err != nil {
		return nil, err
	}
	t, _ := destinations.Lookup(c.Type)
	if t.Auth == destinations.AuthOAuth2 {
		if err := s.refresh(ctx, c); err != nil {
			return nil, err
		}
	}
	return &connectorv1.ResolveConnectionResponse{Connection: ConnectionPB(c), Destination: typePB(t), Credentials: c.Credentials, SigningSecret: c.SigningSecret, EnvironmentId: c.Env}, nil
}

// refresh renews an OAuth access token that expires within refreshBefore;
// a refused refresh marks the connection needs_reauth.
func (s *Server) refresh(ctx context.Context, c *store.Connection) error {
	exp, _ := time.Parse(time.RFC3339Nano, c.Credentials["expiry"])
	if c.Status == store.StatusNeedsReauth {
		return apperr.FailedPrecondition("connection %s needs re-authorisation: %s", c.ID, c.LastError)
	}
	if exp.IsZero() || s.now().Add(refreshBefore).Before(exp) {
		return nil
	}
	old := &oauth2.Token{AccessToken: c.Credentials["access_token"], RefreshToken: c.Credentials["refresh_token"], Expiry: time.Now().Add(-time.Second)}
	xctx := context.WithValue(ctx, oauth2.HTTPClient, s.http)
	tok, err := s.oauthConfig(c.Type).TokenSource(xctx, old).Token()
	if err != nil {
		c.Status, c.LastError, c.LastErrorAt = store.StatusNeedsReauth, "token refresh refused: "+oauthProblem(err), s.now().UTC()
		if uerr := s.store.Update(ctx, c); uerr != nil {
			return uerr
		}
		return apperr.FailedPrecondition("connection %s needs re-authorisation: the destination refused to refresh its token", c.ID)
	}
	c.Credentials = tokenCreds(tok, c.Account)
	return s.store.Update(ctx, c)
}

// ReportConnectionStatus implements ConnectorService.
func (s *Server) ReportConnectionStatus(ctx context.Context, req *connectorv1.ReportConnectionStatusRequest) (*connectorv1.ReportConnectionStatusResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	c, err := s.store.Get(ctx, auth.MustEnvironment(ctx), req.GetConnectionId(), true)
	if err != nil {
		return nil, err
	}
	switch req.GetStatus() {
	case connectorv1.ConnectionStatus_CONNECTION_STATUS_CONNECTED:
		c.Status, c.LastError = store.StatusConnected, ""
	case connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH:
		c.Status, c.LastError, c.LastErrorAt = store.StatusNeedsReauth, req.GetMessage(), s.now().UTC()
	case connectorv1.ConnectionStatus_CONNECTION_STATUS_ERROR:
		c.Status, c.LastError, c.LastErrorAt = store.StatusError, req.GetMessage(), s.now().UTC()
	default:
		return nil, apperr.Invalid("status", "must be CONNECTED, NEEDS_REAUTH or ERROR")
	}
	if err := s.store.Update(ctx, c); err != nil {
		return nil, err
	}
	return &connectorv1.ReportConnectionStatusResponse{Connection: ConnectionPB(c)}, nil
}

// oauthProblem describes a failed token request without repeating the
// token endpoint's body beyond a short excerpt of its error fields.
func oauthProblem(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := "HTTP " + strconv.Itoa(re.Response.StatusCode)
		if re.ErrorCode != "" {
			msg += ": " + destinations.Excerpt(re.ErrorCode)
		}
		if re.ErrorDescription != "" {
			msg += " (" + destinations.Excerpt(re.ErrorDescription) + ")"
		}
		return msg
	}
	return destinations.NetworkProblem(err)
}
