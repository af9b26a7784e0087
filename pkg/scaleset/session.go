package scaleset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Session is a scale set's message session: one per scale set, held by one listener.
type Session struct {
	c          *Client
	scaleSetID int

	mu    sync.Mutex
	state sessionState
}

type sessionState struct {
	SessionID  string      `json:"sessionId,omitempty"`
	OwnerName  string      `json:"ownerName,omitempty"`
	QueueURL   string      `json:"messageQueueUrl,omitempty"`
	QueueToken string      `json:"messageQueueAccessToken,omitempty"`
	Statistics *Statistics `json:"statistics,omitempty"`
}

// Message is one batch from the broker: its id (to acknowledge), the scale set's
// statistics, and the job messages it carries (at most 50).
type Message struct {
	ID         int
	Statistics *Statistics
	Available  []Job // JobAvailable: acquire them to have them assigned
	Assigned   []Job // JobAssigned: start a runner for each
	Started    []Job // JobStarted: a runner took the job
	Completed  []Job // JobCompleted: the job ended, with Result
}

// Job is what a job message says of its job.
type Job struct {
	Type            string    `json:"messageType"`
	RunnerRequestID int64     `json:"runnerRequestId"`
	RepositoryName  string    `json:"repositoryName"`
	OwnerName       string    `json:"ownerName"`
	JobID           string    `json:"jobId"`
	JobWorkflowRef  string    `json:"jobWorkflowRef"`
	JobDisplayName  string    `json:"jobDisplayName"`
	WorkflowRunID   int64     `json:"workflowRunId"`
	RequestLabels   []string  `json:"requestLabels"`
	QueueTime       time.Time `json:"queueTime"`
	RunnerID        int64     `json:"runnerId,omitempty"`
	RunnerName      string    `json:"runnerName,omitempty"`
	Result          string    `json:"result,omitempty"`
}

// OpenSession opens the scale set's message session as owner; ErrSessionConflict when
// another listener holds it (wait and retry: a session of a listener that died expires).
func (c *Client) OpenSession(ctx context.Context, scaleSetID int, owner string) (*Session, error) {
	s := &Session{c: c, scaleSetID: scaleSetID}
	var st sessionState
	if err := c.call(ctx, http.MethodPost, fmt.Sprintf("%s/%d/sessions", scaleSetPath, scaleSetID), nil, "", sessionState{OwnerName: owner}, &st, http.StatusOK); err != nil {
		return nil, err
	}
	if st.SessionID == "" || st.QueueURL == "" || st.QueueToken == "" {
		return nil, errors.New("scale set service: the session came without an id, queue URL or queue token")
	}
	s.state = st
	return s, nil
}

// ID is the session's id.
func (s *Session) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.SessionID
}

// Statistics are the counts the session was opened (or last refreshed) with.
func (s *Session) Statistics() *Statistics {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Statistics
}

// refresh renews the queue token (PATCH on the session).
func (s *Session) refresh(ctx context.Context) error {
	var st sessionState
	if err := s.c.call(ctx, http.MethodPatch, fmt.Sprintf("%s/%d/sessions/%s", scaleSetPath, s.scaleSetID, s.ID()), nil, "", nil, &st, http.StatusOK); err != nil {
		return fmt.Errorf("refreshing the message session: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.QueueToken != "" {
		s.state.QueueToken = st.QueueToken
	}
	if st.QueueURL != "" {
		s.state.QueueURL = st.QueueURL
	}
	if st.Statistics != nil {
		s.state.Statistics = st.Statistics
	}
	return nil
}

// retryExpired runs f, and once more after renewing the queue token if it had expired.
func (s *Session) retryExpired(ctx context.Context, f func() error) error {
	err := f()
	if !errors.Is(err, ErrTokenExpired) {
		return err
	}
	if rerr := s.refresh(ctx); rerr != nil {
		return rerr
	}
	return f()
}

// ErrSessionGone is a message session the broker no longer has (it lapsed, or its scale
// set was deleted): open a new one.
var ErrSessionGone = errors.New("the message session is gone")

// gone turns the queue's 404 into ErrSessionGone: the session, not the scale set.
func gone(err error) error {
	var se *Error
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return fmt.Errorf("%w (%s)", ErrSessionGone, se.Message)
	}
	return err
}

// Message long-polls the queue for the batch after lastID, telling the broker the
// listener can still start maxCapacity runners; nil when the poll ended with none.
func (s *Session) Message(ctx context.Context, lastID, maxCapacity int) (*Message, error) {
	var m *Message
	err := s.retryExpired(ctx, func() error {
		var err error
		m, err = s.message(ctx, lastID, maxCapacity)
		return err
	})
	return m, err
}

func (s *Session) message(ctx context.Context, lastID, maxCapacity int) (*Message, error) {
	s.mu.Lock()
	u, tok := s.state.QueueURL, s.state.QueueToken
	s.mu.Unlock()
	q, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("scale set service: message queue URL: %w", err)
	}
	if lastID > 0 {
		v := q.Query()
		v.Set("lastMessageId", strconv.Itoa(lastID))
		q.RawQuery = v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json; api-version="+apiVersion)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(MaxCapacityHeader, strconv.Itoa(maxCapacity))
	var raw struct {
		ID         int         `json:"messageId"`
		Type       string      `json:"messageType"`
		Body       string      `json:"body"`
		Statistics *Statistics `json:"statistics"`
	}
	raw.ID = -1
	if err := s.c.send(req, "message queue", &raw, http.StatusOK, http.StatusAccepted); err != nil {
		return nil, gone(err)
	}
	if raw.ID < 0 { // 202: the poll ended with no message
		return nil, nil
	}
	if raw.Type != "RunnerScaleSetJobMessages" {
		return nil, fmt.Errorf("scale set service: message %d has the unknown type %q", raw.ID, raw.Type)
	}
	m := &Message{ID: raw.ID, Statistics: raw.Statistics}
	var jobs []Job
	if raw.Body != "" {
		if err := json.Unmarshal([]byte(raw.Body), &jobs); err != nil {
			return nil, fmt.Errorf("scale set service: message %d: %w", raw.ID, err)
		}
	}
	for _, j := range jobs {
		switch j.Type {
		case "JobAvailable":
			m.Available = append(m.Available, j)
		case "JobAssigned":
			m.Assigned = append(m.Assigned, j)
		case "JobStarted":
			m.Started = append(m.Started, j)
		case "JobCompleted":
			m.Completed = append(m.Completed, j)
		}
	}
	return m, nil
}

// Ack deletes a message from the queue: the broker sends it again until then.
func (s *Session) Ack(ctx context.Context, id int) error {
	return s.retryExpired(ctx, func() error {
		s.mu.Lock()
		u, tok := s.state.QueueURL, s.state.QueueToken
		s.mu.Unlock()
		q, err := url.Parse(u)
		if err != nil {
			return err
		}
		q.Path = fmt.Sprintf("%s/%d", q.Path, id)
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, q.String(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		return gone(s.c.send(req, "message queue", nil, http.StatusNoContent, http.StatusOK))
	})
}

// Acquire asks for the jobs of these runner requests; it returns those the scale set got.
func (s *Session) Acquire(ctx context.Context, requestIDs []int64) ([]int64, error) {
	var out struct {
		Value []int64 `json:"value"`
	}
	err := s.retryExpired(ctx, func() error {
		s.mu.Lock()
		tok := s.state.QueueToken
		s.mu.Unlock()
		return s.c.call(ctx, http.MethodPost, fmt.Sprintf("%s/%d/acquirejobs", scaleSetPath, s.scaleSetID), nil, tok, requestIDs, &out, http.StatusOK)
	})
	return out.Value, err
}

// Close deletes the session, so the next listener may open one at once.
func (s *Session) Close(ctx context.Context) error {
	err := s.c.call(ctx, http.MethodDelete, fmt.Sprintf("%s/%d/sessions/%s", scaleSetPath, s.scaleSetID, s.ID()), nil, "", nil, nil, http.StatusNoContent, http.StatusOK)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
