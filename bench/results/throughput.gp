set terminal pngcairo size 1400,1260 font ',9'
set output 'throughput.png'
set multiplot layout 3,1
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set logscale y
set ylabel 'calls/s (log)'
set xtics rotate by -30
set key outside right top
set datafile missing '?'
set grid ytics
set title 'redis-server (resp, ECHO)'
plot 'throughput-redis.dat' using 2:xtic(1) title columnheader(2) , 'throughput-redis.dat' using 3:xtic(1) title columnheader(3) , 'throughput-redis.dat' using 4:xtic(1) title columnheader(4) , 'throughput-redis.dat' using 5:xtic(1) title columnheader(5) , 'throughput-redis.dat' using 6:xtic(1) title columnheader(6) , 'throughput-redis.dat' using 7:xtic(1) title columnheader(7) , 'throughput-redis.dat' using 8:xtic(1) title columnheader(8) , 'throughput-redis.dat' using 9:xtic(1) title columnheader(9)
set title 'rnb-echo-server (length frames, C echo)'
plot 'throughput-echo.dat' using 2:xtic(1) title columnheader(2) , 'throughput-echo.dat' using 3:xtic(1) title columnheader(3) , 'throughput-echo.dat' using 4:xtic(1) title columnheader(4) , 'throughput-echo.dat' using 5:xtic(1) title columnheader(5) , 'throughput-echo.dat' using 6:xtic(1) title columnheader(6) , 'throughput-echo.dat' using 7:xtic(1) title columnheader(7)
set title 'resilnet rnp server (C handler)'
plot 'throughput-rnp.dat' using 2:xtic(1) title columnheader(2) , 'throughput-rnp.dat' using 3:xtic(1) title columnheader(3) , 'throughput-rnp.dat' using 4:xtic(1) title columnheader(4)

unset multiplot
