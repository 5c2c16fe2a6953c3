package openflow

import (
	"io"

	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
)

// RouteLibraryLogs sends ofnet's logrus output into logger, so the agent
// has one structured log. logrus keeps a process-wide logger, so this is
// process-wide too: call it once from main (or TestMain). Replies to Weir's
// own requests never reach ofnet (the relay consumes them), so what ofnet
// logs is about its own session.
func RouteLibraryLogs(logger klog.Logger) {
	logger = logger.WithName("ofnet")
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetLevel(logrus.InfoLevel)
	if logger.V(4).Enabled() {
		std.SetLevel(logrus.DebugLevel)
	}
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(&logrusHook{logger})
}

type logrusHook struct{ log klog.Logger }

func (h *logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *logrusHook) Fire(e *logrus.Entry) error {
	kv := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		kv = append(kv, k, v)
	}
	switch {
	case e.Level <= logrus.ErrorLevel:
		h.log.Error(nil, e.Message, kv...)
	case e.Level == logrus.WarnLevel:
		h.log.Info(e.Message, kv...)
	case e.Level == logrus.InfoLevel:
		h.log.V(3).Info(e.Message, kv...)
	default:
		h.log.V(5).Info(e.Message, kv...)
	}
	return nil
}
