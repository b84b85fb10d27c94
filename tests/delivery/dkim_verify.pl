#!/usr/bin/perl
# Independent DKIM check: Mail::DKIM (Debian libmail-dkim-perl).
# Reads a message on stdin, looks keys up from the loopback nsd on 127.0.0.1:<port> (argv[0]),
# prints one result word per signature ("pass", "fail", ...); exits 0 when all pass.
use strict;
use warnings;
use Net::DNS::Resolver;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;

my $port = shift @ARGV or die "usage: dkim_verify.pl DNS_PORT < message\n";
my $res = Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port, recurse => 0,
                                  tcp_timeout => 5, udp_timeout => 5, retry => 1);
Mail::DKIM::DNS::resolver($res);

my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\r?\n\z/\r\n/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
# Debian 12's Mail::DKIM (1.20230212) predates its ed25519 support: say so instead of "invalid".
my @results = map { ($_->result_detail // '') =~ /unsupported algorithm/ ? 'unsupported' : $_->result }
              $dkim->signatures;
print join(" ", @results), "\n";
for my $sig ($dkim->signatures) {
    print STDERR $sig->result_detail, "\n";
}
exit((@results && !grep { $_ ne 'pass' } @results) ? 0 : 1);
