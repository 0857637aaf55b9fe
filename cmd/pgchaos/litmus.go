package main

// pgchaos run --litmus-result: the run's verdict in LitmusChaos's
// ChaosResult.
//
// Litmus's chaos-runner starts a BYOC experiment as a Job and, when its
// container has ended, reads the verdict from the ChaosResult named
// ENGINE-EXPERIMENT (ENGINE-EXPERIMENT-INSTANCE with an INSTANCE_ID); the
// experiment must create that object and write the verdict into it
// itself. The container's exit status is no verdict: a pod that fails
// makes the runner give up on the experiment without reading the result
// (and the Job starts it again, up to its backoffLimit). So, as Litmus's
// own experiments do, a run whose verdict is recorded exits 0; it exits
// with pgchaos's status only when the ChaosResult could not be written.
//
// The API server is reached as any in-cluster client does: the address
// from KUBERNETES_SERVICE_HOST/PORT, the service account's token and CA
// from its mounted directory. The ChaosResult CRD Litmus installs
// (chaosresults.litmuschaos.io) has no status subresource, so status is
// written with the object, as litmus-go does.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments/runner"
)

// serviceAccountDir is where Kubernetes mounts a pod's service account
// token, CA and namespace (a variable for the tests).
var serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// litmusRetryWait is the first pause between attempts at a request the
// API server did not answer or answered 429/5xx; it doubles each time.
var litmusRetryWait = time.Second

const litmusAttempts = 5

// Litmus's words for a result (chaos-operator api/litmuschaos/v1alpha1).
const (
	litmusRunning   = "Running"
	litmusCompleted = "Completed"
	litmusStopped   = "Stopped"
	litmusError     = "Error"
	litmusAwaited   = "Awaited"
	litmusPass      = "Pass"
	litmusFail      = "Fail"
	// litmus-go's error code for a failure that is none of its own kinds.
	litmusGenericError = "GENERIC_ERROR"
)

// litmusResult is the ChaosResult of one run.
type litmusResult struct {
	client     *http.Client
	base       string // https://host:port
	tokenFile  string
	namespace  string
	name       string
	engine     string
	experiment string
	instance   string
	uid        string
	history    litmusHistory // as found when the run started
}

type litmusHistory struct {
	PassedRuns  int `json:"passedRuns"`
	FailedRuns  int `json:"failedRuns"`
	StoppedRuns int `json:"stoppedRuns"`
}

type litmusExperimentStatus struct {
	Phase                  string `json:"phase"`
	Verdict                string `json:"verdict"`
	ProbeSuccessPercentage string `json:"probeSuccessPercentage"`
	// ErrorOutput is always written: null clears a previous run's.
	ErrorOutput *litmusErrorOutput `json:"errorOutput"`
}

type litmusErrorOutput struct {
	ErrorCode string `json:"errorCode,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// newLitmusResult reads what chaos-runner gives an experiment's pod
// (CHAOSENGINE, EXPERIMENT_NAME, CHAOS_NAMESPACE, CHAOS_UID, INSTANCE_ID)
// and the pod's service account.
func newLitmusResult(getenv func(string) string) (*litmusResult, error) {
	l := &litmusResult{
		engine: getenv("CHAOSENGINE"), experiment: getenv("EXPERIMENT_NAME"),
		namespace: getenv("CHAOS_NAMESPACE"), uid: getenv("CHAOS_UID"), instance: getenv("INSTANCE_ID"),
		tokenFile: filepath.Join(serviceAccountDir, "token"),
	}
	if l.engine == "" || l.experiment == "" {
		return nil, errors.New("CHAOSENGINE and EXPERIMENT_NAME are not set: run it from a Litmus ChaosEngine, whose chaos-runner sets them")
	}
	l.name = l.engine + "-" + l.experiment
	if l.instance != "" {
		l.name += "-" + l.instance
	}
	if l.namespace == "" {
		ns, err := os.ReadFile(filepath.Join(serviceAccountDir, "namespace"))
		if err != nil {
			return nil, fmt.Errorf("CHAOS_NAMESPACE is not set and the service account's namespace is unknown: %w", err)
		}
		l.namespace = strings.TrimSpace(string(ns))
	}
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST/PORT are not set: not in a Kubernetes pod")
	}
	l.base = "https://" + net.JoinHostPort(host, port)
	pool, err := control.LoadCertPool(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("the API server's CA: %w", err)
	}
	if _, err := os.Stat(l.tokenFile); err != nil {
		return nil, fmt.Errorf("the service account's token: %w", err)
	}
	l.client = &http.Client{Timeout: 15 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return l, nil
}

func (l *litmusResult) collection() string {
	return l.base + "/apis/litmuschaos.io/v1alpha1/namespaces/" + url.PathEscape(l.namespace) + "/chaosresults"
}

func (l *litmusResult) object() string { return l.collection() + "/" + url.PathEscape(l.name) }

func (l *litmusResult) labels() map[string]string {
	if l.uid == "" {
		return nil
	}
	return map[string]string{"chaosUID": l.uid}
}

func (l *litmusResult) spec() map[string]string {
	s := map[string]string{"engine": l.engine, "experiment": l.experiment}
	if l.instance != "" {
		s["instance"] = l.instance
	}
	return s
}

// start creates the ChaosResult as running and awaited, or, when it is
// there from an earlier run of the engine, sets it so and keeps its
// history.
func (l *litmusResult) start(ctx context.Context) error {
	running := litmusExperimentStatus{Phase: litmusRunning, Verdict: litmusAwaited, ProbeSuccessPercentage: litmusAwaited}
	obj := map[string]any{
		"apiVersion": "litmuschaos.io/v1alpha1", "kind": "ChaosResult",
		"metadata": map[string]any{"name": l.name, "namespace": l.namespace, "labels": l.labels()},
		"spec":     l.spec(),
		"status":   map[string]any{"experimentStatus": running, "history": l.history},
	}
	status, body, err := l.do(ctx, http.MethodPost, l.collection(), "application/json", obj)
	switch {
	case err != nil:
		return err
	case status == http.StatusCreated || status == http.StatusOK:
		return nil
	case status != http.StatusConflict:
		return apiError("creating", l, status, body)
	}
	status, body, err = l.do(ctx, http.MethodGet, l.object(), "", nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return apiError("reading", l, status, body)
	}
	var found struct {
		Status struct {
			History *litmusHistory `json:"history"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &found); err != nil {
		return fmt.Errorf("reading ChaosResult %s/%s: %w", l.namespace, l.name, err)
	}
	if found.Status.History != nil {
		l.history = *found.Status.History
	}
	return l.patch(ctx, map[string]any{
		"metadata": map[string]any{"labels": l.labels()},
		"spec":     l.spec(),
		"status":   map[string]any{"experimentStatus": running, "history": l.history},
	})
}

// finish records the verdict of a run that ended with exit status code
// (res is nil when nothing ran); problem says why it did not pass.
func (l *litmusResult) finish(ctx context.Context, res *runner.Result, code int, problem string) error {
	st := litmusExperimentStatus{ProbeSuccessPercentage: checksPassed(res)}
	h := l.history
	switch code {
	case runner.ExitPass:
		st.Phase, st.Verdict, st.ProbeSuccessPercentage = litmusCompleted, litmusPass, "100"
		h.PassedRuns++
	case runner.ExitFailed:
		st.Phase, st.Verdict = litmusCompleted, litmusFail
		st.ErrorOutput = &litmusErrorOutput{Reason: failedChecks(res, problem)}
		h.FailedRuns++
	case runner.ExitInterrupted:
		st.Phase, st.Verdict = litmusStopped, litmusStopped
		h.StoppedRuns++
	default: // invalid file, setup: the experiment could not be judged
		st.Phase, st.Verdict = litmusError, litmusError
		st.ErrorOutput = &litmusErrorOutput{ErrorCode: litmusGenericError, Reason: fmt.Sprintf("pgchaos run exit %d: %s", code, problem)}
	}
	return l.patch(ctx, map[string]any{"status": map[string]any{"experimentStatus": st, "history": h}})
}

// checksPassed is the share of the run's hypotheses and verifiers that
// passed, in percent, as Litmus's probeSuccessPercentage.
func checksPassed(res *runner.Result) string {
	if res == nil {
		return "0"
	}
	total, passed := 0, 0
	for _, p := range res.Probes {
		total++
		if p.Pass {
			passed++
		}
	}
	for _, v := range res.Verdicts {
		total++
		if v.Pass {
			passed++
		}
	}
	if total == 0 {
		return "0"
	}
	return strconv.Itoa(passed * 100 / total)
}

// failedChecks names what failed: the hypotheses (with their phase) and
// the verifiers, or the run's problem when no check did.
func failedChecks(res *runner.Result, problem string) string {
	var names []string
	if res != nil {
		for _, p := range res.Probes {
			if !p.Pass {
				names = append(names, "steady_state "+p.Phase+": "+p.Name)
			}
		}
		for _, v := range res.Verdicts {
			if !v.Pass {
				names = append(names, "verify: "+v.Name)
			}
		}
	}
	if len(names) == 0 {
		return problem
	}
	return "failed: " + strings.Join(names, "; ")
}

func (l *litmusResult) patch(ctx context.Context, p any) error {
	status, body, err := l.do(ctx, http.MethodPatch, l.object(), "application/merge-patch+json", p)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return apiError("updating", l, status, body)
	}
	return nil
}

// do sends one request, again when the API server did not answer or
// answered 429 or 5xx, and returns the last answer.
func (l *litmusResult) do(ctx context.Context, method, u, contentType string, body any) (int, []byte, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return 0, nil, err
		}
	}
	wait := litmusRetryWait
	for attempt := 1; ; attempt++ {
		status, answer, err := l.once(ctx, method, u, contentType, data)
		retry := err != nil || status == http.StatusTooManyRequests || status >= 500
		if !retry || attempt == litmusAttempts {
			return status, answer, err
		}
		select {
		case <-ctx.Done():
			return status, answer, err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (l *litmusResult) once(ctx context.Context, method, u, contentType string, data []byte) (int, []byte, error) {
	// Read each time: a projected service account token is rotated.
	token, err := os.ReadFile(l.tokenFile)
	if err != nil {
		return 0, nil, fmt.Errorf("the service account's token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, answer, err
}

// apiError says what the API server answered, with its Status message.
func apiError(doing string, l *litmusResult, status int, body []byte) error {
	var s struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &s) == nil && s.Message != "" {
		msg = s.Message
	}
	return fmt.Errorf("%s ChaosResult %s/%s: %d %s: %s", doing, l.namespace, l.name, status, http.StatusText(status), msg)
}

// runLitmus runs an experiment between creating its ChaosResult and
// recording the verdict in it. The exit status is 0 once the verdict is
// recorded (the ChaosResult carries it; see the file's comment), 3 when
// the ChaosResult could not be created (nothing ran), and pgchaos's own
// when the verdict could not be recorded (3 if the run passed: the
// ChaosResult would say Awaited).
func runLitmus(l *litmusResult, runIt func() (*runner.Result, error), stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err := l.start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "pgchaos: --litmus-result: %v; nothing ran\n", err)
		return exitError{runner.ExitSetup}
	}
	res, runErr := runIt()
	code, problem := runner.ExitPass, ""
	var ee exitError
	var ue errUsage
	switch {
	case runErr == nil:
	case errors.As(runErr, &ee):
		code = ee.code
	case errors.As(runErr, &ue):
		code, problem = runner.ExitInvalid, runErr.Error()
	default:
		code, problem = runner.ExitFailed, runErr.Error()
	}
	if res != nil && res.Problem != "" {
		problem = res.Problem
	}
	// Recorded after an interrupt too: the signal stopped the run, not this.
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if werr := l.finish(ctx, res, code, problem); werr != nil {
		fmt.Fprintf(stderr, "pgchaos: --litmus-result: the verdict is not recorded: %v\n", werr)
		if runErr != nil {
			return runErr
		}
		return exitError{runner.ExitSetup}
	}
	if runErr != nil && !errors.As(runErr, &ee) {
		fmt.Fprintln(stderr, "pgchaos:", runErr) // as exitCode would have
	}
	fmt.Fprintf(stderr, "pgchaos: --litmus-result: ChaosResult %s/%s records exit %d\n", l.namespace, l.name, code)
	return nil
}
