/*
 * kubeboot pause: the process that holds a pod's namespaces open.
 *
 * It must be PID 1 of the pod sandbox: it reaps every child re-parented to
 * it (zombies would otherwise pile up when a pod shares its PID namespace)
 * and exits cleanly when the runtime stops the sandbox with SIGINT or
 * SIGTERM. Written for kubeboot; built static so the image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "unknown"
#endif

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

/* SIGCHLD only needs to interrupt pause(); reaping happens in the loop. */
static void on_child(int sig) { (void)sig; }

static void reap_children(void) {
	int saved = errno;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0 ||
		    strcmp(argv[i], "-version") == 0) {
			printf("kubeboot-pause %s\n", VERSION);
			return 0;
		}
		fprintf(stderr, "usage: %s [-v]\n", argv[0]);
		return 2;
	}
	if (getpid() != 1) {
		fprintf(stderr, "pause: warning: not running as PID 1, zombies of other processes are not reaped\n");
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
		perror("pause: sigaction SIGINT/SIGTERM");
		return 1;
	}
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) != 0) {
		perror("pause: sigaction SIGCHLD");
		return 1;
	}

	/*
	 * Block the signals between the checks and pause() would lose a wakeup;
	 * sigsuspend with an empty mask closes that window.
	 */
	sigset_t block, empty;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGCHLD);
	sigemptyset(&empty);
	sigprocmask(SIG_BLOCK, &block, NULL);
	for (;;) {
		reap_children();
		if (stop_signal) {
			fprintf(stderr, "pause: shutting down, got signal %d\n", (int)stop_signal);
			return 0;
		}
		sigsuspend(&empty);
	}
}
